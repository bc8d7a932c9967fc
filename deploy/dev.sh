#!/usr/bin/env bash
# The README's run command: a local 3-node cluster with demo data.
# Extra arguments go to `boxoffice dev` (e.g. --nodes 5 --data-dir /tmp/x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/prereqs.sh
exec cargo run --release --bin boxoffice -- dev "$@"

#!/usr/bin/env bash
# The README's test command: builds the workspace once (release profile, shared by
# tests, the node binary and the benchmark), runs a short benchmark smoke run
# against a real dev cluster, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/prereqs.sh

cargo fmt --all -- --check

cargo build --release --workspace --bins
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release"

# Benchmark smoke run: a detached 3-node dev cluster on loopback, 5 s of on-sale
# load, a small generated catalogue with a short search and read run (the
# PostgreSQL comparison is left to full runs), then the cluster is stopped
# whatever happened.
smoke_dir="$(mktemp -d)"
stop_smoke() {
  if [ -f "$smoke_dir/cluster.json" ]; then
    for pid in $(grep -o '"pid": *[0-9]*' "$smoke_dir/cluster.json" | grep -o '[0-9]*$'); do
      kill "$pid" 2>/dev/null || true
    done
  fi
  rm -rf "$smoke_dir"
}
trap stop_smoke EXIT
timeout 120 "$bin/boxoffice" dev --data-dir "$smoke_dir" --base-port 7600 --detach >/dev/null
timeout 120 "$bin/boxoffice-bench" onsale --cluster-dir "$smoke_dir" --seats 5000 --clients 16 --duration-s 5
small=(--events 2000 --venues 100 --performers 200)
timeout 120 "$bin/boxoffice-bench" load-catalogue --cluster-dir "$smoke_dir" "${small[@]}"
timeout 120 "$bin/boxoffice-bench" search --cluster-dir "$smoke_dir" "${small[@]}" --total 300 --duration-s 10 --no-pg
timeout 120 "$bin/boxoffice-bench" reads --cluster-dir "$smoke_dir" --duration-s 2 --freshness-samples 20 --trivial-port 7660
stop_smoke
trap - EXIT

cargo test --release --workspace

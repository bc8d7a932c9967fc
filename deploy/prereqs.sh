#!/usr/bin/env bash
# Installs what building boxoffice needs on a Debian/Ubuntu machine:
# libclang (bindgen for librocksdb-sys) and a C/C++ toolchain (RocksDB's C++);
# protoc (the benchmark's etcd gRPC client);
# iproute2 and iptables for the jepsen harness's network partitions;
# promtool (package prometheus) to check the nodes' metrics;
# chromium (and a font) for the operator console's browser test, which Playwright
# for Python drives from a virtualenv (with the Kubernetes manifests' validator).
# Needs a Rust toolchain (cargo) already on PATH.
set -euo pipefail

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The test command checks a live node's /metrics with promtool (Prometheus's).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The test command verifies the systemd unit (systemd-analyze) and validates the
# Kubernetes manifests with a PyPI tool in a virtualenv (python3-venv).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
# The console's browser test runs Debian's Chromium headless (Playwright never
# downloads a browser of its own here), with a font for its text.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
# The benchmark's etcd client (etcd-client) compiles etcd's gRPC definitions.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The jepsen harness's power nemesis mounts its FUSE file system itself with
# mount(2) (root and /dev/fuse; no package: no fusermount, no libfuse).
# The jepsen harness runs its cluster in a network namespace and partitions it
# with iptables (root only; without them it runs on loopback without partitions).
if [ "$(id -u)" -eq 0 ]; then
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v iptables >/dev/null 2>&1 || need+=(iptables)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# PyPI tools of the test command, in a virtualenv outside the clone, pinned:
# kubernetes-validate, schemathesis (the API fuzzer), and the console test's
# requirements. Whatever is missing
# or at another version (a venv made before a pin was added) is installed.
venv="${BOXOFFICE_VENV:-$HOME/.cache/boxoffice-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pins=('kubernetes-validate==1.37.0' 'schemathesis==4.32.5')
while read -r pin; do
  pins+=("$pin")
done < <(grep -E '^[A-Za-z0-9._-]+==' "$(dirname "$0")/../node/tests/console/requirements.txt")
if ! "$venv/bin/python" - "${pins[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
  "$venv/bin/pip" install -q "${pins[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
# The test command checks formatting.
if ! cargo fmt --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt
fi

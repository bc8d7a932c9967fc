#!/usr/bin/env bash
# The README's test command: builds the workspace once (release profile, shared by
# tests, the node binary, the benchmark and the jepsen harness), runs a short
# benchmark smoke run against a real dev cluster, the whole test suite, then a
# short jepsen schedule (every nemesis) against real node processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/prereqs.sh

cargo fmt --all -- --check

cargo build --release --workspace --bins
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release"

# Deploy files: the systemd unit passes systemd-analyze verify without a word
# (its ExecStart pointed at this build), the Kubernetes manifests validate
# strictly against the Kubernetes schemas (offline), and the release binary
# splits into a stripped binary of tens of MB and its debug information.
deploy_dir="$(mktemp -d)"
sed "s#/usr/local/bin/boxoffice#$(realpath "$bin")/boxoffice#" deploy/systemd/boxoffice.service >"$deploy_dir/boxoffice.service"
verify="$(systemd-analyze verify "$deploy_dir/boxoffice.service" 2>&1)"
if [ -n "$verify" ]; then echo "$verify" >&2; exit 1; fi
"${BOXOFFICE_VENV:-$HOME/.cache/boxoffice-venv}/bin/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml
bash deploy/package.sh "$deploy_dir/package" "$bin/boxoffice"
[ "$(du -m "$deploy_dir/package/boxoffice" | cut -f1)" -lt 100 ]
readelf -S "$deploy_dir/package/boxoffice" | grep -q gnu_debuglink
rm -rf "$deploy_dir"

# Benchmark smoke run: a detached 3-node dev cluster on loopback, 5 s of on-sale
# load, a small generated catalogue with a short search and read run (the
# PostgreSQL comparison is left to full runs), then the cluster is stopped
# whatever happened.
smoke_dir="$(mktemp -d)"
stop_smoke() {
  if [ -f "$smoke_dir/cluster.json" ]; then
    pids=$(grep -o '"pid": *[0-9]*' "$smoke_dir/cluster.json" | grep -o '[0-9]*$' | grep -v '^0$' || true)
    for pid in $pids; do
      kill "$pid" 2>/dev/null || true
    done
    # A node still writing its database while the directory is removed makes rm
    # fail: wait (at most 20 s) for every process to be gone, then force it.
    for _ in $(seq 1 100); do
      alive=0
      for pid in $pids; do
        if kill -0 "$pid" 2>/dev/null; then alive=1; fi
      done
      [ "$alive" = 0 ] && break
      sleep 0.2
    done
    for pid in $pids; do
      kill -9 "$pid" 2>/dev/null || true
    done
  fi
  rm -rf "$smoke_dir"
}
trap stop_smoke EXIT
timeout 120 "$bin/boxoffice" dev --data-dir "$smoke_dir" --base-port 7600 --no-rate-limits --detach >/dev/null
timeout 120 "$bin/boxoffice-bench" onsale --cluster-dir "$smoke_dir" --seats 5000 --clients 16 --duration-s 5
small=(--events 2000 --venues 100 --performers 200)
timeout 120 "$bin/boxoffice-bench" checkout --cluster-dir "$smoke_dir" --clients 4 --rounds 1 --round-s 3
timeout 120 "$bin/boxoffice-bench" load-catalogue --cluster-dir "$smoke_dir" "${small[@]}"
timeout 120 "$bin/boxoffice-bench" search --cluster-dir "$smoke_dir" "${small[@]}" --total 300 --duration-s 10 --no-pg
timeout 120 "$bin/boxoffice-bench" reads --cluster-dir "$smoke_dir" --duration-s 2 --freshness-samples 20 --trivial-port 7660
timeout 120 "$bin/boxoffice-bench" queue --cluster-dir "$smoke_dir" --users 5000 --admit-per-minute 12000 --drain-s 10 --slice-s 2 --sample-eta 200 --streams 20
# Scale-out figures in small: clusters of 3 and 4 nodes of their own (shards on 3).
timeout 300 "$bin/boxoffice-bench" scale --nodes 3,4 --shards 8 --rate 40 --duration-s 4 --buyers 8 --base-port 7800
# Every node's metrics, after all that traffic, pass Prometheus's own checker
# (format and naming lint).
for port in 7601 7602 7603; do
  metrics="$(curl -sf --max-time 10 "http://127.0.0.1:$port/metrics")"
  grep -q '^boxoffice_http_requests_total' <<<"$metrics"
  grep -q '^boxoffice_raft_applied_index' <<<"$metrics"
  promtool check metrics <<<"$metrics"
done
# The operator console (/console) in headless Chromium on the same cluster, after
# all that traffic: the cluster, the charts, an event's seat map, a hold shown
# live through the seat stream, the waiting rooms and payments, each checked
# against the API (node/tests/console/console_test.py). Its screenshots are kept.
console_shots="$target_dir/console-screenshots"
rm -rf "$console_shots"
timeout 300 "${BOXOFFICE_VENV:-$HOME/.cache/boxoffice-venv}/bin/python" \
  node/tests/console/console_test.py --cluster-dir "$smoke_dir" --screenshots "$console_shots"
echo "console screenshots: $console_shots"
# The HTTP API fuzzed by schemathesis from the node's own OpenAPI document
# (node/tests/api_fuzz/api_fuzz.py): bad input on every operation is refused as
# documented and changes no booking state; valid input gets no 5xx and answers
# that conform to the document. Bounded in examples per operation and in time.
timeout 1500 "${BOXOFFICE_VENV:-$HOME/.cache/boxoffice-venv}/bin/python" \
  node/tests/api_fuzz/api_fuzz.py --cluster-dir "$smoke_dir" --examples 10 --report-dir "$target_dir/api-fuzz-reports"
stop_smoke
# The abuse bench needs the default rate limits on: a cluster of its own.
smoke_dir="$(mktemp -d)"
timeout 120 "$bin/boxoffice" dev --data-dir "$smoke_dir" --base-port 7600 --no-demo --detach >/dev/null
timeout 120 "$bin/boxoffice-bench" abuse --cluster-dir "$smoke_dir" --rounds 1 --phase-s 5 --honest 20 --holds-per-buyer 5
stop_smoke
trap - EXIT

# Peer comparison in quick mode (about 3 minutes): a 3-node boxoffice cluster,
# PostgreSQL, Redis and etcd, each started by the bench on loopback (installed with
# apt-get if missing; a peer that cannot be installed is reported as missing). It
# fails on any sales-check violation, never on a figure.
compare_dir="$(mktemp -d)"
timeout 900 "$bin/boxoffice-bench" compare --quick --results-dir "$compare_dir/results"
rm -rf "$compare_dir"

cargo test --release --workspace

# The state machine's micro-benchmarks (apply of an on-sale entry, a section's seat
# map) in criterion's quick mode: they print figures and fail if the sale they
# drive is refused anything.
cargo bench --workspace --bench apply -- --quick

# Jepsen: 90 s of the seats, registers, general-admission and payments workloads
# under kill -9, pause, partitions (in a network namespace, as root), clock skew
# and the payments sandbox's faults (duplicate, delayed and lost webhooks, API
# outages), then heal, liveness, final-state and payment checks. The seed comes from the commit, so a
# failure reproduces with the seed it prints; JEPSEN_SEED overrides it.
seed="${JEPSEN_SEED:-$(( 16#$(git rev-parse --short=8 HEAD 2>/dev/null || echo 1) ))}"
jepsen_dir="$(mktemp -d)/jepsen"
if timeout 900 "$bin/jepsen" run --time-limit 90 --nemesis all --seed "$seed" --run-dir "$jepsen_dir"; then
  rm -rf "$(dirname "$jepsen_dir")"
else
  echo "jepsen run failed; its history, nemesis log and node logs are in $jepsen_dir" >&2
  exit 1
fi

# Jepsen with each shard on 3 of the 5 nodes: 60 s of the same workloads while
# replicas move (a busy shard's leader's or a follower's) and nodes drain,
# with kill -9, pauses and partitions, then the same checks.
jepsen_dir="$(mktemp -d)/jepsen-placement"
if timeout 900 "$bin/jepsen" run --time-limit 60 --replication-factor 3 --nemesis all --seed "$seed" --run-dir "$jepsen_dir"; then
  rm -rf "$(dirname "$jepsen_dir")"
else
  echo "jepsen run (replication factor 3) failed; its history, nemesis log and node logs are in $jepsen_dir" >&2
  exit 1
fi

# Power loss: each node's data directory on a FUSE file system that forgets
# whatever was not fsynced; cuts of one node, a minority and the whole cluster
# at crash points (mid WAL group commit, snapshot build and install, log purge,
# right after a vote, during a membership change), with kill -9 between them;
# then the same checks, and each cut replica's log against what it had
# acknowledged.
jepsen_dir="$(mktemp -d)/jepsen-power"
if timeout 600 "$bin/jepsen" run --time-limit 45 --nemesis power,kill --seed "$seed" --run-dir "$jepsen_dir"; then
  rm -rf "$(dirname "$jepsen_dir")"
else
  echo "jepsen power run failed; its history, nemesis log and node logs are in $jepsen_dir" >&2
  exit 1
fi

# The power nemesis can fail: nodes that acknowledge writes without fsyncing
# their WAL (storage.skip_wal_fsync, fault injection) pass a kill -9 schedule,
# since the page cache outlives the process, and fail a power cut.
broken=(--time-limit 20 --workload seats,registers,ga --skip-wal-fsync --seed "$seed")
jepsen_dir="$(mktemp -d)/jepsen-broken-kill"
if ! timeout 600 "$bin/jepsen" run "${broken[@]}" --nemesis kill --run-dir "$jepsen_dir"; then
  echo "without WAL fsyncs, kill -9 alone should find nothing; see $jepsen_dir" >&2
  exit 1
fi
rm -rf "$(dirname "$jepsen_dir")"
jepsen_dir="$(mktemp -d)/jepsen-broken-power"
if timeout 600 "$bin/jepsen" run "${broken[@]}" --nemesis power --power-scope one --run-dir "$jepsen_dir" >"$jepsen_dir.out" 2>&1; then
  cat "$jepsen_dir.out"
  echo "the power nemesis did not catch nodes that never fsync their WAL; see $jepsen_dir" >&2
  exit 1
fi
grep -q "came back from a power cut" "$jepsen_dir.out" || {
  cat "$jepsen_dir.out"
  echo "the broken build failed the power run, but not for a short log; see $jepsen_dir" >&2
  exit 1
}
grep -E "^(FAILED|ok) |came back from a power cut" "$jepsen_dir.out" | sed -n "1,12p"
rm -rf "$(dirname "$jepsen_dir")" "$jepsen_dir.out"

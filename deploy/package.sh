#!/usr/bin/env bash
# Splits a built boxoffice binary into what is deployed and what is kept for
# profiling: DIR/boxoffice, stripped of its debug information (tens of MB; its
# symbol table stays, so backtraces and perf still name functions), and
# DIR/boxoffice.debug, the debug information alone (compressed), which the
# stripped binary names in its .gnu_debuglink section, so gdb and perf find it
# when it sits beside the binary or under /usr/lib/debug.
#
#   deploy/package.sh DIR [BINARY]    # BINARY: default $CARGO_TARGET_DIR/release/boxoffice
set -euo pipefail
out="${1:?usage: deploy/package.sh DIR [BINARY]}"
bin="${2:-${CARGO_TARGET_DIR:-target}/release/boxoffice}"
[ -x "$bin" ] || { echo "no binary at $bin: build it first (cargo build --release --workspace --bins)" >&2; exit 1; }
mkdir -p "$out"
objcopy --only-keep-debug --compress-debug-sections=zlib "$bin" "$out/boxoffice.debug"
# The debuglink is the debug file's name and checksum, looked up next to the binary.
(cd "$out" && objcopy --strip-debug --add-gnu-debuglink=boxoffice.debug "$(realpath "$bin")" boxoffice)
chmod 0755 "$out/boxoffice"
"$out/boxoffice" --help >/dev/null
echo "$out/boxoffice: $(du -m "$out/boxoffice" | cut -f1) MB (from $(du -m "$bin" | cut -f1) MB); debug information in $out/boxoffice.debug ($(du -m "$out/boxoffice.debug" | cut -f1) MB)"

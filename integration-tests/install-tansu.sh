#!/usr/bin/env bash
# Installs the Kafka-compatible test broker `tansu` once, into a cache that
# survives clean clones (GW_TOOLS_DIR, default ~/.cache/gatewatch-tools).
# Building it takes about 12 minutes on a 2-core machine, so it is skipped
# when the binary is already there. Prints the binary's path on stdout.
set -euo pipefail
TOOLS="${GW_TOOLS_DIR:-$HOME/.cache/gatewatch-tools}"
TANSU_VERSION="${TANSU_VERSION:-}"
BIN="$TOOLS/bin/tansu"
if [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$TOOLS"
echo "install-tansu.sh: building tansu into $TOOLS (about 12 minutes, once)" >&2
ver=()
[ -n "$TANSU_VERSION" ] && ver=(--version "$TANSU_VERSION")
# Own target dir: never shares locks or artefacts with the project's build.
CARGO_TARGET_DIR="$TOOLS/build" cargo install --locked --root "$TOOLS" \
    "${ver[@]}" tansu --features dynostore >&2
rm -rf "$TOOLS/build"
echo "$BIN"

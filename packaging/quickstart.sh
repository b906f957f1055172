#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the sensor on the
# loopback interface, printing one JSON event per HTTP message. Ctrl-C stops it
# (and detaches everything). Extra arguments go to `gatewatch run`.
set -euo pipefail
cd "$(dirname "$0")/.."
packaging/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
echo "quickstart: starting gatewatch on lo; try: curl -H 'Authorization: Bearer demo' http://127.0.0.1:<port>/" >&2
exec target/release/gatewatch run --iface lo --output stdout "$@"

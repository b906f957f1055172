#!/usr/bin/env bash
# Builds the .deb and the .rpm into target/debian and target/generate-rpm.
# Installs cargo-deb and cargo-generate-rpm (crates.io) once when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null 2>&1 || cargo install --locked "$tool"
done
cargo build --release --locked -p gatewatch
cargo deb -p gatewatch --no-build --no-strip
cargo generate-rpm -p sensor
ls -l target/debian/*.deb target/generate-rpm/*.rpm

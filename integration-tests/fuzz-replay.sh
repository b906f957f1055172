#!/usr/bin/env bash
# Coverage-guided fuzzing of `gatewatch replay`'s input handling (pcap/pcapng
# readers, link-type conversion, re-segmentation) with cargo fuzz (libFuzzer,
# AddressSanitizer). Needs a nightly toolchain (rustup's "nightly"); installs
# cargo-fuzz from crates.io when missing. Not part of .ci/run (the machine's
# CI toolchain is stable): every `cargo test` runs the same property over the
# seeds and 60,000 deterministic mutations (sensor/tests/replay_fuzz.rs).
# Usage: integration-tests/fuzz-replay.sh [SECONDS]   (default 600)
# A crash leaves its input under fuzz/artifacts/replay_pcap/; add it to
# fuzz/seeds/replay_pcap/ with the fix, so that cargo test keeps it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SECONDS_TO_RUN=${1:-600}
export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz-replay: no nightly toolchain (rustup toolchain list); cargo fuzz needs one" >&2
    exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$REPO/fuzz"
corpus="$REPO/target/fuzz-corpus/replay_pcap"
mkdir -p "$corpus"
cargo +nightly fuzz run replay_pcap "$corpus" "$REPO/fuzz/seeds/replay_pcap" -- \
    -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -timeout=10 -print_final_stats=1

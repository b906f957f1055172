#!/usr/bin/env bash
# Every test of the project: installs what the tests need, then runs the unit
# tests, the kernel tests (BPF_PROG_TEST_RUN, as root), the kernel matrix (the
# kernel tests and a smoke test on each kernel of
# integration-tests/kernels/matrix.txt, booted under QEMU), the rule pack's
# fixtures, and the end-to-end suite with network namespaces and real clients.
set -euo pipefail
cd "$(dirname "$0")/.."
packaging/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== build"
cargo build --locked
echo "== unit and kernel tests (cargo test)"
cargo test --workspace --locked
echo "== kernel matrix (host kernel natively, Debian kernels under QEMU)"
integration-tests/kernels/run-matrix.sh
echo "== rule pack fixtures (gatewatch rules test rules/)"
target/debug/gatewatch rules check rules/
target/debug/gatewatch rules test rules/
echo "== packages (.deb, .rpm)"
packaging/build-packages.sh
echo "== end-to-end tests (network namespaces, curl, tshark, packages)"
GATEWATCH_REQUIRE_PACKAGES=1 GATEWATCH_BIN="$PWD/target/debug/gatewatch" integration-tests/run.sh

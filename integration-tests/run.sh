#!/usr/bin/env bash
# Run the gatewatch end-to-end tests (as root). Exit code is pytest's.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

bash "$HERE/setup.sh" || { echo "run.sh: setup.sh failed" >&2; exit 2; }
export GATEWATCH_BIN="${GATEWATCH_BIN:-$REPO/target/debug/gatewatch}"
cd "$REPO"
"$HERE/.venv/bin/python" -m pytest -v integration-tests "$@"
exit $?

#!/usr/bin/env bash
# Idempotent installer for the gatewatch integration tests.
# Installs the system tools the tests drive (curl, tshark, iproute2, bpftool,
# python3-venv) with apt, a venv at integration-tests/.venv with
# requirements.txt, and the Kafka test broker tansu (install-tansu.sh: built
# once, about 12 minutes, into a cache). Does nothing that is already done.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"

need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd curl    || need_pkgs+=(curl)
have_cmd tshark  || need_pkgs+=(tshark)
have_cmd ip      || need_pkgs+=(iproute2)
have_cmd bpftool || [ -x /usr/sbin/bpftool ] || need_pkgs+=(bpftool)
have_cmd rpm     || need_pkgs+=(rpm)
have_cmd wrk     || need_pkgs+=(wrk)
have_cmd nginx   || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx)
have_cmd hping3  || [ -x /usr/sbin/hping3 ] || need_pkgs+=(hping3)
have_cmd systemd-analyze || need_pkgs+=(systemd)

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY="$(command -v python3)"; fi
fi
if [ ! -x "$VENV/bin/python" ] && ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_pkgs+=(python3-venv)
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: need root to install: ${need_pkgs[*]}" >&2
        exit 1
    fi
    echo "setup.sh: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no, non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections || true
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# The Kafka tests' broker; GW_SKIP_TANSU=1 leaves it out (those tests then skip).
if [ "${GW_SKIP_TANSU:-0}" != 1 ]; then
    bash "$HERE/install-tansu.sh" >/dev/null
fi

stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$VENV/bin/python" -c 'import pytest, jsonschema, confluent_kafka' >/dev/null 2>&1; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup.sh: creating venv at $VENV" >&2
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
echo "$want" > "$stamp"

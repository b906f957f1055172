#!/usr/bin/env bash
# Installs what building and running gatewatch needs on Debian/Ubuntu (apt),
# and checks the Rust toolchain. Idempotent: does nothing when all is present.
set -euo pipefail

# cmake, libssl-dev, libcurl4-openssl-dev: the vendored librdkafka (Kafka sink, with TLS).
packages=(clang libelf-dev zlib1g-dev pkg-config make bpftool iproute2 git cmake libssl-dev libcurl4-openssl-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root (sudo $0)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: no Rust toolchain found; install one with rustup (Rust 1.85 or newer)" >&2
  exit 1
fi
if [ ! -r /sys/kernel/btf/vmlinux ]; then
  echo "install-deps: warning: /sys/kernel/btf/vmlinux is missing; gatewatch needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y)" >&2
fi
echo "install-deps: ok ($(cargo --version), $(clang --version | head -n1))"

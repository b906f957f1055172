#!/usr/bin/env bash
# Fetches the kernels of matrix.txt (and trixie's virtiofsd, which shares the host
# filesystem with the guests) from the system's own Debian archive into a cache
# outside the clone (GW_KERNEL_CACHE, default ~/.cache/gatewatch-kernels), each
# unpacked into CACHE/NAME. Uses a private apt state under CACHE/apt: the system's
# apt sources are never touched (a trixie source would make this bookworm machine
# a mix). Idempotent: a kernel already unpacked is not fetched again.
# Prints one line per kernel: NAME DIR PACKAGES.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${GW_KERNEL_CACHE:-$HOME/.cache/gatewatch-kernels}"
MATRIX="${GW_KERNEL_MATRIX:-$HERE/matrix.txt}"
mkdir -p "$CACHE/debs"

uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$uri" ] || { echo "fetch-kernels: no Debian archive URI in the system's apt sources" >&2; exit 1; }

# apt with a private state for one suite; lists refreshed once a day
apt_opts() {
    local a=$CACHE/apt/$1
    printf '%s\n' -o "Dir::Etc::sourcelist=$a/sources.list" -o Dir::Etc::sourceparts=- \
        -o "Dir::State::lists=$a/lists" -o "Dir::Cache::archives=$a/archives" \
        -o Dir::State::status=/dev/null -o APT::Sandbox::User=root -o Debug::NoLocking=1
}
suite_ready() {
    local s=$1 a=$CACHE/apt/$1 opts
    mkdir -p "$a/lists/partial" "$a/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $s main" > "$a/sources.list"
    if [ -z "$(find "$a/lists" -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
        mapfile -t opts < <(apt_opts "$s")
        apt-get "${opts[@]}" update -qq >/dev/null || { echo "fetch-kernels: apt-get update for $s failed" >&2; return 1; }
    fi
}
# the pinned package if the archive has it, else the newest of its series
resolve() {
    local s=$1 p=$2 opts re
    mapfile -t opts < <(apt_opts "$s")
    if apt-cache "${opts[@]}" show "$p" >/dev/null 2>&1; then echo "$p"; return; fi
    # PREFIX-MAJOR.MINOR[.PATCH][+debN][-ABI]-amd64SUFFIX: any PATCH, debN and ABI
    [[ $p =~ ^([a-z-]*-)([0-9]+)\.([0-9]+)[.0-9]*(\+deb[0-9]+)?(-[0-9]+)?(-amd64.*)$ ]] || return 0
    re="^${BASH_REMATCH[1]}${BASH_REMATCH[2]}\\.${BASH_REMATCH[3]}(\\.[0-9]+)*(\\+deb[0-9]+(\\.[0-9]+)?)?(-[0-9]+)?${BASH_REMATCH[6]}\$"
    apt-cache "${opts[@]}" pkgnames 2>/dev/null | grep -E "$re" | sort -V | tail -1
}
fetch_into() { # DIR SUITE PACKAGE...
    local dir=$1 s=$2 opts p f; shift 2
    mapfile -t opts < <(apt_opts "$s")
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    for p in "$@"; do
        (cd "$CACHE/debs" && apt-get "${opts[@]}" download "$p" >/dev/null) \
            || { echo "fetch-kernels: downloading $p ($s) failed" >&2; return 1; }
        f=$(ls -t "$CACHE/debs/${p}_"*.deb | head -1)
        dpkg -x "$f" "$dir.tmp"
        rm -f "$f"
    done
    # 7.x ships its image as usr/lib/modules/KVER/vmlinuz.unsigned: name it as
    # the older packages do, boot/vmlinuz-KVER, which kmatrix.sh looks for
    if ! ls "$dir.tmp"/boot/vmlinuz-* >/dev/null 2>&1; then
        for f in "$dir.tmp"/usr/lib/modules/*/vmlinuz*; do
            [ -f "$f" ] || continue
            kver=$(basename "$(dirname "$f")")
            mkdir -p "$dir.tmp/boot" && ln -sf "../usr/lib/modules/$kver/$(basename "$f")" "$dir.tmp/boot/vmlinuz-$kver"
            break
        done
    fi
    printf '%s\n' "$@" > "$dir.tmp/.packages"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
}

# virtiofsd (trixie's Rust daemon; QEMU 7.2's C one cannot serve a root)
if [ ! -x "$CACHE/virtiofsd/usr/libexec/virtiofsd" ]; then
    suite_ready trixie
    fetch_into "$CACHE/virtiofsd" trixie virtiofsd
fi

while read -r name suite pkgs; do
    case $name in ''|'#'*) continue ;; esac
    read -ra want <<< "$pkgs"
    suite_ready "$suite"
    got=()
    for p in "${want[@]}"; do
        r=$(resolve "$suite" "$p")
        [ -n "$r" ] || { echo "fetch-kernels: $name: no package like $p in $suite" >&2; exit 1; }
        [ "$r" = "$p" ] || echo "fetch-kernels: $name: $p is gone from $suite, using $r" >&2
        got+=("$r")
    done
    dir=$CACHE/$name
    if [ ! -f "$dir/.packages" ] || [ "$(cat "$dir/.packages")" != "$(printf '%s\n' "${got[@]}")" ]; then
        echo "fetch-kernels: fetching $name (${got[*]})" >&2
        fetch_into "$dir" "$suite" "${got[@]}"
    fi
    echo "$name $dir ${got[*]}"
done < "$MATRIX"

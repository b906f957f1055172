#!/usr/bin/env bash
# The kernel matrix (as root): the host's own kernel natively, then each kernel
# of matrix.txt booted under QEMU (kmatrix.sh; TCG where the host's KVM is
# nested), each running guest-check.sh: doctor (load both programs, verifier
# instruction counts), the kernel tests, and a `gatewatch run` smoke test with
# one HTTP and one TLS request. Prints one table row per kernel and writes the
# table to $GW_MATRIX_OUT/matrix.md (default target/kmatrix). Exits 1 when any
# kernel failed. GW_MATRIX_KERNELS="6.1 7.3" limits the QEMU rows.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO"
export PATH="$HOME/.cargo/bin:$PATH"
OUT="${GW_MATRIX_OUT:-$REPO/target/kmatrix}"
rm -rf "$OUT"; mkdir -p "$OUT"

# what the guests need besides the project's build: QEMU, a static busybox, cpio, kmod
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
{ command -v busybox >/dev/null && file -L "$(command -v busybox)" | grep -q static; } || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v file >/dev/null || need+=(file)
command -v openssl >/dev/null || need+=(openssl)
# kmatrix.sh builds each guest's module tree with depmod and loads modules with modprobe
{ command -v modprobe >/dev/null || [ -x /usr/sbin/modprobe ]; } || need+=(kmod)
if ((${#need[@]})); then
    echo "run-matrix: installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

kernels=$("$HERE/fetch-kernels.sh")

cargo build --locked -q
bins=$(cargo test --locked --no-run --message-format=json -q \
        --test kernel_parser --test kernel_l4 --test tls_uprobes 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
bin_of() { awk -v n="$1" '$1 == n {print $2}' <<< "$bins"; }
envs=(GW_BIN="$REPO/target/debug/gatewatch" GW_TEST_KERNEL_PARSER="$(bin_of kernel_parser)"
      GW_TEST_KERNEL_L4="$(bin_of kernel_l4)" GW_TEST_TLS_UPROBES="$(bin_of tls_uprobes)"
      GATEWATCH_LOG=info)

row() { # NAME DIR SECONDS: one table row from DIR/result and DIR/doctor.json
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
name, d, secs = sys.argv[1], sys.argv[2], sys.argv[3]
r = {}
try:
    for l in open(f"{d}/result"):
        k, _, v = l.rstrip("\n").partition("=")
        r[k] = v
except OSError:
    pass
progs = {}
try:
    doc = json.load(open(f"{d}/doctor.json"))
    for p in doc.get("programs", []):
        progs[p["name"]] = p
except (OSError, ValueError):
    doc = {}
def prog(n):
    p = progs.get(n)
    if p is None:
        return "?"
    return f'{p["verified_insns"]:,}' if p.get("loaded") else "rejected"
net = "yes" if progs.get("gw_tc_ingress", {}).get("loaded") and progs.get("gw_tc_egress", {}).get("loaded") else "no"
tls = "yes" if progs.get("gw_tls_data_read", progs.get("gw_ssl_read_ret", {})).get("loaded") else "no"
tests = f'{r.get("tests_passed", "?")} passed, {r.get("tests_failed", "?")} failed'
retried = [t for k, v in r.items() if k.startswith("retried_") for t in v.split()]
if retried:
    tests += f' ({len(retried)} passed on a retry: {", ".join(retried)})'
smoke = f'http {r.get("smoke_net", "?")}, tls {r.get("smoke_tls", "?")}'
status = "ok" if r.get("ok") == "1" else "FAILED"
kernel = r.get("kernel", name)
print(f"| {kernel} | {net} | {tls} | {prog('gw_tc_ingress')} / {prog('gw_tc_egress')} / {prog('gw_ssl_read_ret')} | {tests} | {smoke} | {secs} s | {status} |")
PY
}
header="| kernel | packet program loads | TLS programs load | verified insns (tc ingress / tc egress / SSL_read return) | kernel tests | smoke (events seen) | time | result |"
echo "$header" | tee "$OUT/matrix.md"
echo "|---|---|---|---|---|---|---|---|" | tee -a "$OUT/matrix.md"
failed=0

t0=$(date +%s)
env "${envs[@]}" "$HERE/guest-check.sh" "$OUT/host" > "$OUT/host.log" 2>&1 || failed=1
row host "$OUT/host" $(( $(date +%s) - t0 )) | tee -a "$OUT/matrix.md"

while read -r name dir _; do
    [ -n "$name" ] || continue
    if [ -n "${GW_MATRIX_KERNELS:-}" ] && ! grep -qw -- "$name" <<< "$GW_MATRIX_KERNELS"; then continue; fi
    mkdir -p "$OUT/$name"
    kenv=(); for e in "${envs[@]}"; do kenv+=(--env "$e"); done
    t0=$(date +%s)
    # 9p: trixie's virtiofsd needs a newer glibc than bookworm's; Debian's
    # generic kernels have the 9p modules
    KM_VIRTIOFSD=/nonexistent "$HERE/kmatrix.sh" --fs 9p --mem 3G --timeout "${GW_MATRIX_TIMEOUT:-1200}" \
        --rw "$OUT/$name" --log "$OUT/$name.console" "${kenv[@]}" --cwd "$REPO" \
        "$dir" -- "$HERE/guest-check.sh" "$OUT/$name" > "$OUT/$name.log" 2>&1 || failed=1
    row "$name" "$OUT/$name" $(( $(date +%s) - t0 )) | tee -a "$OUT/matrix.md"
done <<< "$kernels"
if [ $failed -ne 0 ]; then
    echo "run-matrix: some kernel failed; logs and verifier output under $OUT/<kernel>/" >&2
    grep -H "^failed_\|^ok=0\|^smoke_leak" "$OUT"/*/result 2>/dev/null >&2 || true
fi
exit $failed

#!/usr/bin/env bash
# TLS capture overhead, loopback only, bounded (about 50 s):
#  1. added latency per SSL_read/SSL_write call (bench/ssl_calls.py: CPython's
#     ssl over memory BIOs, one thread, 4 SSL calls per round), with HTTP messages
#     (parsed, one event each) and with opaque bytes (probes only); off, on, off;
#  2. nginx HTTPS throughput with wrk, sensor off and on, and the ratio.
# The sensor runs with TLS capture only (no interface), so the numbers are the
# uprobes' cost, not TC's. Run as root. GATEWATCH_BIN picks the binary (default:
# target/release/gatewatch, else target/debug/gatewatch).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-10000}"
WRK_SECS="${WRK_SECS:-8}"
PORT="${PORT:-18447}"
PY="${PYTHON:-python3}"

if [ "$(id -u)" -ne 0 ]; then echo "tls_overhead.sh: run as root" >&2; exit 2; fi
BIN="${GATEWATCH_BIN:-}"
if [ -z "$BIN" ]; then
    for b in "$REPO/target/release/gatewatch" "$REPO/target/debug/gatewatch"; do
        [ -x "$b" ] && { BIN="$b"; break; }
    done
fi
[ -x "${BIN:-}" ] || { echo "tls_overhead.sh: no gatewatch binary (cargo build --release, or set GATEWATCH_BIN)" >&2; exit 2; }
command -v wrk >/dev/null || {
    echo "tls_overhead.sh: installing wrk" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
command -v nginx >/dev/null || { echo "tls_overhead.sh: nginx not installed" >&2; exit 2; }

TMP="$(mktemp -d /tmp/gw-tls-bench.XXXXXX)"
SENSOR_PID=""
NGINX_PID=""
cleanup() {
    [ -n "$SENSOR_PID" ] && kill "$SENSOR_PID" 2>/dev/null && wait "$SENSOR_PID" 2>/dev/null || true
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench \
    -days 1 -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

cat > "$TMP/gw.toml" <<CONF
[sensor]
interfaces = []
state_dir = "$TMP"
stats_interval_secs = 3600
[[output]]
spec = "jsonl:$TMP/events.jsonl"
events = true
alerts = true
[audit]
enabled = false
[metrics]
enabled = false
CONF

sensor_on() {
    "$BIN" run --config "$TMP/gw.toml" 2>"$TMP/sensor.log" &
    SENSOR_PID=$!
    for _ in $(seq 100); do
        grep -q "gatewatch running" "$TMP/sensor.log" && return 0
        kill -0 "$SENSOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "sensor did not start:" >&2; cat "$TMP/sensor.log" >&2; exit 1
}
sensor_off() {
    kill -TERM "$SENSOR_PID"; wait "$SENSOR_PID" || true; SENSOR_PID=""
}

calls() { "$PY" "$HERE/ssl_calls.py" "$TMP/cert.pem" "$TMP/key.pem" "$ROUNDS" "$@" | awk '{print $3}'; }

echo "== per SSL call: $ROUNDS rounds x 4 calls, CPython ssl over memory BIOs (no sockets, one thread), best of 3"
calls >/dev/null   # warm-up
h_off1=$(calls http); o_off1=$(calls opaque)
sensor_on
h_on=$(calls http); o_on=$(calls opaque)
tls_events=$(grep -c '"source":"tls"' "$TMP/events.jsonl" 2>/dev/null || true)
sensor_off
h_off2=$(calls http); o_off2=$(calls opaque)
h_off=$(( (h_off1 + h_off2) / 2 )); o_off=$(( (o_off1 + o_off2) / 2 ))
printf '%-34s %8s %8s %10s\n' "payload" "off ns" "on ns" "added ns"
printf '%-34s %8d %8d %10d\n' "HTTP message (parsed, event out)" "$h_off" "$h_on" $(( h_on - h_off ))
printf '%-34s %8d %8d %10d\n' "not HTTP (probes only)" "$o_off" "$o_on" $(( o_on - o_off ))
echo "(tls events written while on: $tls_events)"

cat > "$TMP/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $TMP/cb; proxy_temp_path $TMP/px; fastcgi_temp_path $TMP/fc;
  uwsgi_temp_path $TMP/uw; scgi_temp_path $TMP/sc;
  server {
    listen 127.0.0.1:$PORT ssl;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
CONF
nginx -c "$TMP/nginx.conf" -p "$TMP" -e "$TMP/nginx-error.log" &
NGINX_PID=$!
for _ in $(seq 50); do curl -sk -o /dev/null "https://127.0.0.1:$PORT/" && break; sleep 0.1; done

rps() { wrk -t1 -c16 -d"${WRK_SECS}s" -H "Authorization: Bearer bench-token" "https://127.0.0.1:$PORT/api/bench" \
        | awk '/Requests\/sec/ {print $2}'; }
echo "== nginx HTTPS, wrk -t1 -c16 -d${WRK_SECS}s (keep-alive; wrk links libssl too: both ends probed)"
r_off=$(rps); echo "sensor off: $r_off req/s"
sensor_on
r_on=$(rps); echo "sensor on:  $r_on req/s"
sensor_off
awk -v on="$r_on" -v off="$r_off" 'BEGIN { printf "throughput ratio on/off: %.3f\n", on / off }'

#!/usr/bin/env python3
"""What gatewatch costs the traffic it watches, measured in one run.

Two network namespaces joined by a veth pair; nginx serves a small JSON
response in one, wrk loads it from the other. Runs alternate without and with
the sensor (attached to the server's veth, default rules, events to a JSONL
file) and the script prints requests/s, p50/p99 latency, the ratios, sensor CPU
time and peak RSS, events captured vs requests sent, ring-buffer drops, and the
TC program's own cost per packet under that load (kernel bpf_stats).

Then a load step at fixed request rates (wrk paced by a Lua delay per
connection; the achieved rate is printed) with the fraction captured at each.

    integration-tests/bench/http_overhead.py [--seconds 10] [--rounds 2] [--connections 50]
                                             [--rates 5000,20000,50000] [--kafka BROKER/TOPIC]
                                             [--no-bpf-stats]

GW_BENCH_SENSOR_EXTRA="worker_nice = 20" (any [sensor] keys; later sections too,
e.g. $'[capture]\ncpu_budget_percent = 5') tries other sensor settings in the
same bench. Root only; traffic stays inside the namespaces it
creates and removes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("GATEWATCH_BIN", str(ROOT / "target/release/gatewatch"))
CLI, SRV = "gwbench-cli", "gwbench-srv"
CLI_IF, SRV_IF = "gwbc0", "gwbs0"
CLI_IP, SRV_IP = "10.234.0.1", "10.234.0.2"


def sh(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def topology_up():
    topology_down()
    sh("ip", "netns", "add", CLI)
    sh("ip", "netns", "add", SRV)
    sh("ip", "link", "add", CLI_IF, "netns", CLI, "type", "veth", "peer", "name", SRV_IF, "netns", SRV)
    sh("ip", "-n", CLI, "addr", "add", f"{CLI_IP}/24", "dev", CLI_IF)
    sh("ip", "-n", SRV, "addr", "add", f"{SRV_IP}/24", "dev", SRV_IF)
    for ns, ifc in ((CLI, CLI_IF), (SRV, SRV_IF)):
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", ifc, "up")


def topology_down():
    for ns in (CLI, SRV):
        sh("ip", "netns", "del", ns, check=False)


def nginx_up(tmp: Path) -> subprocess.Popen:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {SRV_IP}:8080 reuseport backlog=4096;
        location / {{ default_type application/json; return 200 '{{"ok":true,"items":[1,2,3]}}'; }}
    }}
}}
""")
    p = subprocess.Popen(["ip", "netns", "exec", SRV, "nginx", "-c", str(conf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if sh("ip", "netns", "exec", CLI, "curl", "-s", "-o", "/dev/null", f"http://{SRV_IP}:8080/",
              check=False).returncode == 0:
            return p
        time.sleep(0.1)
    raise SystemExit("nginx did not come up")


def tansu_up(tmp: Path) -> tuple[subprocess.Popen, str]:
    """The test broker on the server namespace's loopback, with the alerts topic."""
    tools = Path(os.environ.get("GW_TOOLS_DIR", Path.home() / ".cache/gatewatch-tools"))
    tansu = os.environ.get("TANSU_BIN", str(tools / "bin/tansu"))
    if not os.access(tansu, os.X_OK):
        raise SystemExit(f"no tansu at {tansu}: run integration-tests/install-tansu.sh")
    url = "tcp://127.0.0.1:19092"
    log = open(tmp / "tansu.log", "wb")
    p = subprocess.Popen(["ip", "netns", "exec", SRV, tansu, "broker", "--listener-url", url,
                          "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        r = sh("ip", "netns", "exec", SRV, tansu, "topic", "create", "gatewatch-alerts",
               "--broker", url, "--partitions", "3", check=False)
        if r.returncode == 0:
            return p, "127.0.0.1:19092/gatewatch-alerts"
        if time.time() > deadline or p.poll() is not None:
            p.kill()
            raise SystemExit(f"tansu did not start: {r.stderr}")
        time.sleep(0.3)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


PACE_LUA = "local d = tonumber(os.getenv('GW_DELAY_MS') or '0')\nfunction delay() return d end\n"


def pacing(rate: int) -> tuple[int, int]:
    """(connections, delay ms) so that connections * 1000 / delay ~= rate."""
    for delay in (10, 5, 2, 1):
        conns = rate * delay // 1000
        if conns <= 100:
            return max(conns, 1), delay
    return 100, 1


def wrk(seconds: int, connections: int, rate: int | None = None, tmp: Path | None = None) -> dict:
    extra, env = [], dict(os.environ)
    if rate:
        connections, delay = pacing(rate)
        script = (tmp or Path(tempfile.gettempdir())) / "pace.lua"
        script.write_text(PACE_LUA)
        extra, env["GW_DELAY_MS"] = ["-s", str(script)], str(delay)
    r = sh("ip", "netns", "exec", CLI, "wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
           "--latency", *extra, "-H", "Authorization: Bearer bench-token-0123456789abcdef",
           "-H", "User-Agent: gatewatch-bench/1", f"http://{SRV_IP}:8080/api/v1/items?id=7",
           timeout=seconds + 30, env=env)
    out = r.stdout
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "requests": total}


def proc_stats(pid: int) -> tuple[float, int]:
    """(cpu seconds, peak RSS in KiB) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    return cpu, hwm


def bpf_prog_cost() -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over gatewatch's TC programs (kernel.bpf_stats_enabled)."""
    r = sh("bpftool", "-j", "prog", "show", check=False)
    try:
        progs = json.loads(r.stdout or "[]")
    except json.JSONDecodeError:
        return 0, 0
    ns = cnt = 0
    for p in progs:
        if p.get("name") in ("gw_tc_ingress", "gw_tc_egress"):
            ns += p.get("run_time_ns", 0)
            cnt += p.get("run_cnt", 0)
    return ns, cnt


def with_sensor(tmp: Path, seconds: int, connections: int, rate: int | None = None,
                kafka: str | None = None) -> dict:
    events = tmp / "events.jsonl"
    events.unlink(missing_ok=True)
    cfg = tmp / "gw.toml"
    kafka_out = f'[[output]]\nspec = "kafka:{kafka}"\nevents = false\n' if kafka else ""
    cfg.write_text(f'[sensor]\nstate_dir = "{tmp}/state"\nstats_interval_secs = 1\n{os.environ.get("GW_BENCH_SENSOR_EXTRA", "")}\n'
                   f'[metrics]\nenabled = false\n[audit]\nenabled = false\n'
                   f'[[output]]\nspec = "jsonl:{events}"\n{kafka_out}')
    err = open(tmp / "sensor.err", "w")
    p = subprocess.Popen(["ip", "netns", "exec", SRV, BIN, "run", "--config", str(cfg), "--iface", SRV_IF],
                         stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, NO_COLOR="1"))
    deadline = time.time() + 15
    while "gatewatch running" not in (tmp / "sensor.err").read_text():
        if p.poll() is not None or time.time() > deadline:
            raise SystemExit("sensor did not start:\n" + (tmp / "sensor.err").read_text())
        time.sleep(0.05)
    cpu0, _ = proc_stats(p.pid)
    ns0, cnt0 = bpf_prog_cost()
    res = wrk(seconds, connections, rate, tmp)
    ns1, cnt1 = bpf_prog_cost()
    time.sleep(1.5)  # let the pipeline drain and a stats event land
    cpu1, hwm = proc_stats(p.pid)
    p.send_signal(signal.SIGINT)
    p.wait(30)
    err.close()
    captured = drops = shed = 0
    inspected = []
    with open(events) as f:
        for line in f:
            e = json.loads(line)
            if e.get("kind") == "http_request" and (e.get("http") or {}).get("path", "").startswith("/api/v1/items"):
                captured += 1
            elif e.get("kind") == "sensor_stats":
                drops += e["stats"]["ringbuf_drops"]
                shed += e["stats"].get("shed_packets", 0)
                inspected.append(e["stats"].get("inspected_percent", 100.0))
    res.update(cpu_s=cpu1 - cpu0, rss_mb=hwm / 1024, captured=captured, drops=drops, shed=shed,
               inspected=statistics.median(inspected) if inspected else 100.0,
               tc_ns=(ns1 - ns0) / max(cnt1 - cnt0, 1), tc_runs=cnt1 - cnt0)
    return res


PEERS = {
    # name: (command run in the server namespace writing one line per request to OUT, binary)
    "httpry": (["httpry", "-i", SRV_IF, "-o", "{out}", "-q"], "httpry"),
    "tshark": (["tshark", "-q", "-n", "-l", "-i", SRV_IF, "-f", "tcp port 8080", "-Y", "http.request",
                "-T", "fields", "-e", "http.request.uri"], "tshark"),
}


def with_peer(name: str, tmp: Path, seconds: int, connections: int) -> dict | None:
    """The same load with a peer watching the server interface instead of the
    sensor: its throughput cost and the requests it logged."""
    cmd, binary = PEERS[name]
    if not shutil.which(binary) and not os.path.exists(f"/usr/sbin/{binary}"):
        return None
    out = tmp / f"{name}.log"
    out.unlink(missing_ok=True)
    argv = [c.replace("{out}", str(out)) for c in cmd]
    log = open(out, "w") if "{out}" not in " ".join(cmd) else subprocess.DEVNULL
    p = subprocess.Popen(["ip", "netns", "exec", SRV, *argv], stdout=log, stderr=subprocess.DEVNULL)
    time.sleep(2.0)  # capturing
    cpu0, _ = proc_stats(p.pid) if p.poll() is None else (0.0, 0)
    res = wrk(seconds, connections)
    time.sleep(1.5)
    cpu1, hwm = proc_stats(p.pid) if p.poll() is None else (cpu0, 0)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
    if log is not subprocess.DEVNULL:
        log.close()
    text = out.read_text(errors="replace") if out.exists() else ""
    res.update(captured=text.count("/api/v1/items"), cpu_s=cpu1 - cpu0, rss_mb=hwm / 1024)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rates", default="5000,20000,50000",
                    help="fixed request rates for the load step (comma-separated; empty to skip)")
    ap.add_argument("--no-bpf-stats", action="store_true",
                    help="leave kernel.bpf_stats_enabled off: every BPF program run then costs two "
                         "clock reads less, as in production, but the TC cost is not measured (0)")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip the httpry and tshark rows (the same load watched by each peer instead)")
    ap.add_argument("--kafka", default=None,
                    help="also run with alerts to Kafka: BROKER/TOPIC, or 'auto' to start the "
                         "test broker (tansu, from install-tansu.sh) in the server namespace")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces, eBPF)")
    for tool in ("nginx", "wrk", "curl"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is missing: apt-get install nginx wrk curl")
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"no gatewatch binary at {BIN}: cargo build --release (or set GATEWATCH_BIN)")
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    stats_was = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("0" if a.no_bpf_stats else "1")
    topology_up()
    ng = broker = None
    try:
        ng = nginx_up(tmp)
        if a.kafka == "auto":
            broker, a.kafka = tansu_up(tmp)
        wrk(2, a.connections)  # warm-up
        base, sens, kafk = [], [], []
        peers: dict[str, list[dict]] = {n: [] for n in PEERS if not a.no_peers}
        for _ in range(a.rounds):
            base.append(wrk(a.seconds, a.connections))
            sens.append(with_sensor(tmp, a.seconds, a.connections))
            if a.kafka:
                kafk.append(with_sensor(tmp, a.seconds, a.connections, kafka=a.kafka))
            for n in peers:
                r = with_peer(n, tmp, a.seconds, a.connections)
                if r:
                    peers[n].append(r)
        med = lambda rows, k: statistics.median(r[k] for r in rows)
        b_rps, s_rps = med(base, "rps"), med(sens, "rps")
        print(f"\nnginx on a veth pair, wrk -t1 -c{a.connections}, {a.seconds}s x {a.rounds} rounds, median")
        print(f"{'':14}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        print(f"{'no sensor':14}{b_rps:>10.0f}{med(base, 'p50_ms'):>9.3f}{med(base, 'p99_ms'):>9.3f}")
        print(f"{'sensor':14}{s_rps:>10.0f}{med(sens, 'p50_ms'):>9.3f}{med(sens, 'p99_ms'):>9.3f}")
        print(f"throughput ratio {s_rps / b_rps:.3f}; p99 ratio {med(sens, 'p99_ms') / med(base, 'p99_ms'):.3f}")
        # The peers, same load, same interface, in the same invocation.
        for n, rows in peers.items():
            if not rows:
                print(f"{n:14}not installed")
                continue
            logged = [100.0 * r["captured"] / max(r["requests"], 1) for r in rows]
            print(f"{n:14}{med(rows, 'rps'):>10.0f}{med(rows, 'p50_ms'):>9.3f}{med(rows, 'p99_ms'):>9.3f}"
                  f"  ratio {med(rows, 'rps') / b_rps:.3f}, logged "
                  + ", ".join(f"{x:.1f}%" for x in logged)
                  + f", CPU {statistics.median(r['cpu_s'] for r in rows) * 100 / a.seconds:.0f}% of a core")
        logged = [100.0 * r["captured"] / max(r["requests"], 1) for r in sens]
        print(f"{'sensor':14}logged " + ", ".join(f"{x:.1f}%" for x in logged))
        if kafk:
            k_rps = med(kafk, "rps")
            print(f"{'sensor+kafka':14}{k_rps:>10.0f}{med(kafk, 'p50_ms'):>9.3f}{med(kafk, 'p99_ms'):>9.3f}")
            print(f"kafka: throughput ratio {k_rps / b_rps:.3f}; p99 ratio {med(kafk, 'p99_ms') / med(base, 'p99_ms'):.3f}")
        for name, rows in (("sensor", sens), ("sensor+kafka", kafk)):
            for i, r in enumerate(rows, 1):
                print(f"{name} round {i}: {r['captured']}/{r['requests']} requests captured "
                      f"({100.0 * r['captured'] / max(r['requests'], 1):.2f}%), ring-buffer drops {r['drops']}, "
                      f"CPU {r['cpu_s']:.1f}s ({100 * r['cpu_s'] / a.seconds:.0f}% of a core), "
                      f"peak RSS {r['rss_mb']:.1f} MB, TC program {r['tc_ns']:.0f} ns/packet over {r['tc_runs']} packets")
                if r['shed']:
                    print(f"{'':14}CPU budget: {r['shed']} payload packets uninspected, "
                          f"median {r['inspected']:.1f}% of connections inspected")
                # What one request costs, wherever the CPU comes from: the kernel
                # program (softirq, both directions) and the sensor process.
                per_req = max(r['requests'], 1)
                print(f"{'':14}per request: kernel {r['tc_ns'] * r['tc_runs'] / per_req / 1000:.2f} us, "
                      f"sensor process {r['cpu_s'] * 1e6 / max(r['captured'], 1):.2f} us per captured request")
        rates = [int(x) for x in a.rates.split(",") if x.strip()]
        if rates:
            print(f"\nload step: fixed rates, {a.seconds}s each (achieved rate from wrk; "
                  "captured counts requests in flight at the end too, so it is capped at 100%)")
            print(f"{'target':>8}{'no-sensor rps':>15}{'p99 ms':>8}{'sensor rps':>12}{'p99 ms':>8}"
                  f"{'captured':>10}{'drops':>8}{'CPU %':>7}{'RSS MB':>8}{'TC ns':>7}")
            for rate in rates:
                b = wrk(a.seconds, a.connections, rate, tmp)
                r = with_sensor(tmp, a.seconds, a.connections, rate)
                print(f"{rate:>8}{b['rps']:>15.0f}{b['p99_ms']:>8.2f}{r['rps']:>12.0f}{r['p99_ms']:>8.2f}"
                      f"{min(100.0, 100.0 * r['captured'] / max(r['requests'], 1)):>9.2f}%{r['drops']:>8}"
                      f"{100 * r['cpu_s'] / a.seconds:>7.0f}{r['rss_mb']:>8.1f}{r['tc_ns']:>7.0f}")
    finally:
        if broker:
            broker.kill()
            broker.wait(10)
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(stats_was)
        if ng:
            ng.send_signal(signal.SIGQUIT)
            try:
                ng.wait(10)
            except subprocess.TimeoutExpired:
                ng.kill()
        topology_down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

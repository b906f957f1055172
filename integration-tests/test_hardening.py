"""The adversarial pass, kept: crafted traffic that real servers serve, and what
the sensor must do with it.

- Live (real nginx and Python's http.server in the server namespace): every
  crafted request is first checked to be *served* (200), then must be seen the
  way the server resolved it: a protected path alerts (GW-HTTP-001), whatever
  the spelling of its start line or target.
- No secret byte in any output: stdout, the JSONL file, alerts, the audit
  trail, the sensor's log and its metrics, for secrets in query strings, in
  userinfo, and in credentials split across segments.
- Every loss is counted: a full flow table (a flood of partial flows), more
  pipelined requests than one packet's parse, TCP in IP fragments, segments
  that overlap or come out of order; each shows in sensor_stats, and the ones
  that cost inspection raise GW-SENSOR-001 / GW-SENSOR-004.
- The same crafted cases in a pcap through `gatewatch replay`.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import gwlib
from gwlib import eth, ipv4, pcap_bytes, tcp

NGINX_PORT = 8089
METRICS = "127.0.0.1:19464"
# Distinct, never-repeated secrets: any 8-byte piece of one in an output is a leak.
SECRETS = {
    "query": "QsEcReT7a1b2c3d4e5",
    "sig": "SiGsEcReT9z8y7x6w5",
    "userinfo": "UsErPaSs4k3j2h1g0f",
    "bearer": "BeArErToK5m6n7b8v9",
    "cookie": "CoOkIeSiD1q2w3e4r5",
}


def stats_total(sensor, field):
    return sum(e["stats"].get(field, 0) for e in sensor.events() if e.get("kind") == "sensor_stats")


def wait_stats(sensor, field, minimum=1, timeout=6.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = stats_total(sensor, field)
        if n >= minimum:
            return n
        time.sleep(0.2)
    raise AssertionError(f"sensor_stats.{field} stayed below {minimum}: {stats_total(sensor, field)}")


def leaks(blob: bytes) -> list[str]:
    """Secrets (any 8-byte piece, in any case) found in blob."""
    low = blob.lower()
    found = []
    for name, s in SECRETS.items():
        for i in range(len(s) - 7):
            if s[i:i + 8].lower().encode() in low:
                found.append(f"{name}:{s[i:i + 8]}")
                break
    return found


def served(r: gwlib.RawResult, what) -> None:
    assert r.response.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), (what, r.response[:120])


@pytest.fixture(scope="module")
def nginx_plain(topo, tmp_path_factory):
    """nginx (event-driven: partial requests do not block it) on plain HTTP."""
    gwlib.need("nginx")
    d = tmp_path_factory.mktemp("nginx-plain")
    temps = "\n".join(f"  {k}_temp_path {d / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = d / "nginx.conf"
    conf.write_text(f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{ access_log off;
{temps}
  server {{ listen {topo.srv4}:{NGINX_PORT}; merge_slashes on;
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }} }} }}
""")
    proc = subprocess.Popen(["ip", "netns", "exec", topo.srv_ns, "nginx", "-c", str(conf), "-p", str(d),
                             "-e", str(d / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = topo.in_cli("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://{topo.srv4}:{NGINX_PORT}/ready", check=False)
            if r.stdout == "200":
                break
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.1)
        else:
            pytest.fail("nginx did not answer within 10 s")
        yield NGINX_PORT
    finally:
        gwlib.stop_process(proc)


def sensor_config(extra=""):
    return f"""[sensor]
stats_interval_secs = 1
[metrics]
enabled = true
listen = "{METRICS}"
{extra}
"""


def with_state(cfg: str, sensor_dir: Path) -> str:
    return cfg.replace("[sensor]\n", f'[sensor]\nstate_dir = "{sensor_dir / "state"}"\n', 1)


def test_crafted_requests_servers_serve_are_seen_as_served_and_leak_nothing(
        topo, httpd, nginx_plain, sensor_factory, tmp_path):
    """Start-line and target spellings, URL secrets and split credentials, to
    both real servers: each served, each protected one alerted, no secret in
    any output the sensor writes or serves."""
    s = sensor_factory("crafted", config=with_state(sensor_config(), tmp_path / "crafted"))
    q, sig, ui = SECRETS["query"], SECRETS["sig"], SECRETS["userinfo"]
    py, ng = 8080, nginx_plain
    host = topo.srv4
    # (server port, request chunks, protected path the alert must name or None)
    cases = [
        (py, [b"GET  /admin/c1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"], "/admin/c1"),
        (py, [b"GET\t/admin/c2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"], "/admin/c2"),
        (py, [b"GET /admin/c3  HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"], "/admin/c3"),
        (ng, [b"\r\n\nGET /admin/c4 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"], "/admin/c4"),
        # (nginx 1.22 refuses userinfo with 400; Python's http.server serves it)
        (py, [f"GET http://u:{ui}@{host}/admin/c5 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()],
         "/admin/c5"),
        (py, [b"GET /admin/c6 HTTP/1.1\r\nHost: h\r\nAuthorization: \r\nConnection: close\r\n\r\n"], "/admin/c6"),
        (ng, [f"GET /admin/c7?api_key={q}&X-Amz-Signature={sig} HTTP/1.1\r\nHost: h\r\n"
              "Connection: close\r\n\r\n".encode()], "/admin/c7"),
        (py, [f"GET /p?x=1?access_token={q}&Token={q} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()],
         None),
        # a request pipelined after a chunked body, one segment (nginx decodes the chunks)
        (ng, [b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5;x=1\r\nGET /\r\n0\r\nX-T: 1\r\n\r\n"
              b"GET /admin/c10 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"], "/admin/c10"),
        # credentials split mid-value across segments (TCP_NODELAY, a pause between)
        (ng, [b"GET /api/c9 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " + SECRETS["bearer"][:7].encode(),
              SECRETS["bearer"][7:].encode() + b"\r\nCookie: sid=" + SECRETS["cookie"][:5].encode(),
              SECRETS["cookie"][5:].encode() + b"\r\nConnection: close\r\n\r\n"], None),
    ]
    for port, chunks, _ in cases:
        r = gwlib.raw_http(topo, chunks, port=port, nodelay=len(chunks) > 1, pause=0.15)
        served(r, chunks[0][:60])
        if b"/admin/c10" in chunks[0]:
            assert r.response.count(b"HTTP/1.1 200") == 2, r.response[:300]
    for _, chunks, path in cases:
        if path:
            s.wait_alert("GW-HTTP-001", pred=lambda a, p=path: p in json.dumps(a))
    # The split credentials arrived whole: present, their hashes from all of it.
    c9 = s.wait_for(lambda e: e.get("kind") == "http_request" and e["http"].get("path") == "/api/c9")[0]
    assert set(c9["http"]["credentials"]) == {"authorization", "cookie"}, c9["http"]
    assert c9["http"]["segments"] >= 2
    c5 = s.wait_for(lambda e: e.get("kind") == "http_request"
                    and "/admin/c5" in (e["http"].get("path") or ""))[0]
    assert "userinfo_removed" in c5["http"]["anomalies"]

    metrics = topo.in_srv("curl", "-s", f"http://{METRICS}/metrics", check=False).stdout
    assert "gatewatch" in metrics
    assert s.stop(signal.SIGTERM) == 0
    outputs = {p.name: p.read_bytes() for p in s.workdir.rglob("*") if p.is_file()}
    outputs["metrics"] = metrics.encode()
    assert any("audit" in n for n in outputs), sorted(outputs)
    found = {name: leaks(blob) for name, blob in outputs.items() if leaks(blob)}
    assert not found, f"secret bytes in outputs: {found}"


def test_a_flood_of_partial_flows_cuts_messages_but_never_loses_them(
        topo, nginx_plain, sensor_factory, tmp_path):
    """More partial flows than the flow table holds: the victim's request,
    served by nginx, still reaches the rules (emitted at once, truncated), and
    the cut is counted and alerted (GW-SENSOR-001)."""
    s = sensor_factory("flood", config=with_state(sensor_config("[capture]\nflow_table_size = 16\n"),
                                                    tmp_path / "flood"))
    partial = []
    try:
        for i in range(40):
            c = gwlib.netns_socket(topo.cli_ns)
            c.settimeout(3)
            c.connect((topo.srv4, nginx_plain))
            c.sendall(f"GET /fill/{i} HTTP/1.1\r\nHost: fill\r\nX-Pad: ".encode())
            partial.append(c)
        time.sleep(0.3)
        r = gwlib.raw_http(topo, [b"GET /admin/victim HTTP/1.1\r\nHost: v",
                                  b"ictim\r\nConnection: close\r\n\r\n"],
                           port=nginx_plain, nodelay=True, pause=0.2)
        served(r, "victim")
        s.wait_alert("GW-HTTP-001", pred=lambda a: "/admin/victim" in json.dumps(a))
        full = wait_stats(s, "flow_table_full")
        s.wait_alert("GW-SENSOR-001", pred=lambda a: "flow table" in json.dumps(a))
        print(f"\n40 partial flows, table of 16: {full} messages emitted early (flow_table_full)")
    finally:
        for c in partial:
            c.close()
    # The flood's own messages end with their FINs: cut, emitted, none left behind.
    s.wait_for(lambda e: e.get("kind") == "http_request" and "/fill/" in (e["http"].get("path") or ""),
               count=40, timeout=8)


def test_pipelined_requests_past_the_per_packet_limit_are_counted(topo, httpd, sensor_factory, tmp_path):
    s = sensor_factory("pipeline", config=with_state(sensor_config(), tmp_path / "pipeline"))
    reqs = b"".join(f"GET /pl/{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(24))
    r = gwlib.raw_http(topo, [reqs + b"GET /pl/last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"])
    assert r.response.count(b"HTTP/1.1 200") == 25, r.response[:200]
    s.wait_for(lambda e: e.get("kind") == "http_request" and "/pl/" in (e["http"].get("path") or ""),
               count=16)
    wait_stats(s, "pipeline_left")
    s.wait_alert("GW-SENSOR-001", pred=lambda a: "pipelined" in json.dumps(a))


def raw_send(topo, packets):
    """Send raw IPv4 packets (headers included) from the client namespace."""
    script = ("import socket,sys\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n"
              "for line in sys.stdin.read().split():\n"
              "    p=bytes.fromhex(line); s.sendto(p,(socket.inet_ntoa(p[16:20]),0))\n")
    subprocess.run(["ip", "netns", "exec", topo.cli_ns, "python3", "-c", script],
                   input="\n".join(p.hex() for p in packets), text=True, check=True, timeout=10)


def test_tcp_in_ip_fragments_is_counted_and_alerted(topo, httpd, sensor_factory, tmp_path):
    s = sensor_factory("frag", config=with_state(sensor_config(), tmp_path / "frag"))
    seg = tcp(b"GET /admin/frag HTTP/1.1\r\nHost: h\r\n\r\n", sport=41000, dport=8080)
    # first fragment (More Fragments, offset 0) and a second one the server never completes
    first = ipv4(seg[:24], src=topo.cli4, dst=topo.srv4, flags_frag=0x2000, ident=4242,
                 total_len=20 + 24)
    second = ipv4(seg[24:], src=topo.cli4, dst=topo.srv4, flags_frag=3, ident=4242)
    raw_send(topo, [first, second])
    n = wait_stats(s, "tcp_fragments", minimum=2)
    s.wait_alert("GW-SENSOR-004")
    print(f"\nTCP fragments counted: {n}")


def test_crafted_pcap_replays_with_every_case_flagged_or_counted(tmp_path):
    """The same classes offline: overlap (first copy wins), a segment before
    its predecessor, fragments, userinfo, query secrets, 20 pipelined requests."""
    frames = []
    cli, srv = "10.9.0.1", "10.9.0.2"

    def seg(payload, sport, seq, flags=0x18):
        return eth(ipv4(tcp(payload, sport=sport, dport=80, seq=seq, flags=flags), cli, srv))

    # overlap by one byte with other content: the first copy wins -> /admin/ov
    frames += [seg(b"GET /adm", 50001, 1000), seg(b"Xin/ov HTTP/1.1\r\nHost: h\r\n\r\n", 50001, 1007)]
    # the second segment first, then the first, then FIN after the whole request
    req = b"GET /admin/late HTTP/1.1\r\nHost: h\r\n\r\n"
    frames += [seg(req[7:], 50002, 2007), seg(req[:7], 50002, 2000),
               seg(b"", 50002, 2000 + len(req), flags=0x11)]
    # TCP in fragments
    t = tcp(b"GET /admin/frag HTTP/1.1\r\n\r\n", sport=50003, dport=80)
    frames.append(eth(ipv4(t[:24], cli, srv, flags_frag=0x2000, ident=7, total_len=44)))
    # userinfo and query secrets
    frames.append(seg(f"GET http://u:{SECRETS['userinfo']}@h/admin/ui?api_key={SECRETS['query']} HTTP/1.1\r\n"
                      f"Host: h\r\n\r\n".encode(), 50004, 1))
    # 20 pipelined requests in one segment
    frames.append(seg(b"".join(f"GET /pp/{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(20)),
                      50005, 1))
    pcap = tmp_path / "crafted.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    r = subprocess.run([gwlib.GATEWATCH_BIN, "replay", "--pcap", str(pcap)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "panicked" not in r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    events = [e for e in lines if "class_uid" not in e and e.get("kind") == "http_request"]
    paths = {e["http"]["path"]: e["http"] for e in events}
    assert "/admin/ov" in paths and not paths["/admin/ov"]["anomalies"], paths.get("/admin/ov")
    late = [h for p, h in paths.items() if p.startswith("/ad") and "out_of_order" in h["anomalies"]]
    assert late, paths.keys()
    ui = [h for p, h in paths.items() if p.startswith("http://h/admin/ui")]
    assert ui and "userinfo_removed" in ui[0]["anomalies"], paths.keys()
    assert sum(p.startswith("/pp/") for p in paths) == 16
    summary = None
    for line in reversed(r.stderr.splitlines()):
        if line.strip().startswith("{") and '"kernel"' in line:
            summary = json.loads(line)
            break
    assert summary, r.stderr[-2000:]
    k = summary["kernel"]
    assert k["overlap_trimmed"] == 1 and k["flow_lost"] >= 1, k
    assert k["tcp_fragments"] == 1 and k["pipeline_left"] == 1, k
    alerts_ = [e for e in lines if "class_uid" in e]
    assert any("/admin/ui" in json.dumps(a) and "GW-HTTP-001" in json.dumps(a) for a in alerts_)
    assert not leaks(r.stdout.encode() + r.stderr.encode())

"""Offline replay: pcaps recorded from real traffic, compared with tshark, and
hand-built hostile pcaps that must give counted skips, never a crash."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import gwlib
from gwlib import curl, eth, ipv4, pcap_bytes, tcp, tcp4_frame

TSHARK_FIELDS = ["http.request.method", "http.host", "http.request.uri", "http.user_agent"]


def replay(pcap: Path, timeout=60):
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([gwlib.GATEWATCH_BIN, "replay", "--pcap", str(pcap)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def summary(stderr: str) -> dict:
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "kernel" in obj and "replay" in obj:
                return obj
    raise AssertionError(f"no JSON summary on stderr:\n{stderr[-2000:]}")


def json_lines(stdout: str) -> list[dict]:
    out = []
    for n, line in enumerate(stdout.splitlines(), 1):
        try:
            out.append(json.loads(line))
        except ValueError as e:
            pytest.fail(f"replay stdout line {n} is not JSON ({e}): {line[:200]!r}")
    # Replay runs the rules too; alerts (OCSF findings) are not events.
    return [e for e in out if "class_uid" not in e]


def no_panic(r: subprocess.CompletedProcess):
    assert "panicked" not in r.stderr and "RUST_BACKTRACE" not in r.stderr, r.stderr[-2000:]
    assert r.returncode not in (101, -6, -11, 134, 139), f"crashed: {r.returncode}\n{r.stderr}"


def tshark_requests(pcap: Path) -> list[tuple[str, ...]]:
    r = gwlib.run(["tshark", "-n", "-r", str(pcap), "-o", "tcp.desegment_tcp_streams:TRUE",
                   "-o", "http.desegment_headers:TRUE", "-Y", "http.request", "-T", "fields",
                   "-E", "separator=\t", "-E", "occurrence=f",
                   *sum((["-e", f] for f in TSHARK_FIELDS), [])])
    rows = []
    for line in r.stdout.splitlines():
        cols = line.split("\t")
        cols += [""] * (len(TSHARK_FIELDS) - len(cols))
        rows.append(tuple(cols[: len(TSHARK_FIELDS)]))
    return rows


def tshark_uris(pcap: Path) -> list[str]:
    return [row[2] for row in tshark_requests(pcap)]


# ---------------------------------------------------------------------------
# Recorded traffic vs tshark

def test_replay_matches_tshark(topo, httpd, tmp_path):
    gwlib.need("tshark")
    pcap = tmp_path / "capture.pcapng"
    tag = uuid.uuid4().hex[:8]
    cap = subprocess.Popen(
        ["ip", "netns", "exec", topo.srv_ns, "tshark", "-q", "-n", "-i", topo.srv_if,
         "-f", "tcp port 8080", "-w", str(pcap), "-a", "duration:60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_in_capture(path_prefix: str, send, tries=60):
        """Send (bounded) until a request with that path is in the capture file."""
        for i in range(tries):
            send(i)
            time.sleep(0.1)
            if pcap.exists() and any(u.startswith(path_prefix) for u in tshark_uris(pcap)):
                return
            if cap.poll() is not None:
                break
        raise AssertionError(f"tshark never captured {path_prefix}: "
                             f"{cap.stderr.read().decode(errors='replace') if cap.poll() is not None else ''}")

    v4 = f"http://{topo.srv4}:8080"
    v6 = f"http://[{topo.srv6}]:8080"
    try:
        wait_in_capture(f"/warmup/{tag}", lambda i: curl(topo, f"{v4}/warmup/{tag}/{i}"))
        sent = [
            (f"{v4}/r/{tag}/1?a=b", ["-A", "ua-one/1.0"]),
            (f"{v4}/r/{tag}/2", ["-A", "ua-two", "-d", "k=v&x=y"]),
            (f"{v4}/r/{tag}/3", ["-X", "PUT", "-H", "Content-Type: application/json",
                                 "-d", '{"a":1}', "-A", "Mozilla/5.0 (X11; Linux) gwt"]),
            (f"{v4}/r/{tag}/4", ["-X", "DELETE", "-A", "ua-four"]),
            (f"{v4}/r/{tag}/5", ["-H", "Host: api.example.test", "-A", "ua-five"]),
            (f"{v4}/r/{tag}/6", ["-H", "User-Agent:"]),
            (f"{v6}/r/{tag}/7/v6?six=1", ["-A", "ua-six"]),
            # ~5 KB header block: a GSO frame bigger than test_run takes.
            (f"{v4}/r/{tag}/8/big", ["-A", "ua-big", "-H", "X-Big: " + "b" * 5000]),
            (f"{v4}/r/{tag}/9", ["-I", "-A", "ua-head"]),
            (f"{v4}/r/{tag}/10/%7Euser?q=a%20b", ["-X", "PATCH", "-d", "p", "-A", "ua-ten",
                                                   "-H", "X-Request-Id: ten"]),
            # Two requests on one keep-alive connection.
            (f"{v4}/r/{tag}/11", ["-A", "ua-keepalive", f"{v4}/r/{tag}/12"]),
        ]
        for url, args in sent:
            code, *_ = curl(topo, url, *args)
            assert code == 200
        wait_in_capture(f"/sentinel/{tag}", lambda i: curl(topo, f"{v4}/sentinel/{tag}/{i}"))
    finally:
        if cap.poll() is None:
            cap.send_signal(signal.SIGINT)
            try:
                cap.wait(15)
            except subprocess.TimeoutExpired:
                cap.kill()
                cap.wait(5)

    expected = tshark_requests(pcap)
    uris = [e[2] for e in expected]
    for n in range(1, 13):
        assert any(u.startswith(f"/r/{tag}/{n}") for u in uris), f"tshark lacks request {n}: {uris}"

    r = replay(pcap)
    no_panic(r)
    assert r.returncode == 0, r.stderr
    events = json_lines(r.stdout)
    reqs = [e for e in events if e["kind"] == "http_request"]
    got = [(e["http"]["method"], e["http"]["headers"].get("host", ""), e["http"]["path"],
            e["http"]["headers"].get("user-agent", "")) for e in reqs]
    # tshark shows query values; the kernel masks them (capture.query_clear empty).
    assert got == [(m, h, gwlib.masked(u), ua) for (m, h, u, ua) in expected]
    assert all(e["source"] == "replay" for e in events)
    big = next(e for e in reqs if e["http"]["path"] == f"/r/{tag}/8/big")
    assert big["http"]["segments"] >= 2 and "truncated" not in big["http"]["anomalies"]
    v6req = next(e for e in reqs if e["http"]["path"].startswith(f"/r/{tag}/7/"))
    assert v6req["src"]["ip"] == topo.cli6 and v6req["dst"] == {"ip": topo.srv6, "port": 8080}
    # Every captured request has its response. tshark may start between a
    # warm-up request and its response: that response is in the pcap alone,
    # and the replay rightly reports it (on a flow with no captured request).
    resps = [e for e in events if e["kind"] == "http_response"]
    req_ports = {e["src"]["port"] for e in reqs}
    answered = [e for e in resps if e["dst"]["port"] in req_ports]
    orphans = [e for e in resps if e["dst"]["port"] not in req_ports]
    assert len(answered) == len(reqs) and all(e["http"]["status"] == 200 for e in answered), \
        (len(answered), len(reqs), [e["http"]["status"] for e in answered])
    assert len(orphans) <= 1, orphans
    s = summary(r.stderr)
    assert s["replay"]["decode_errors"] == 0
    assert s["kernel"]["ringbuf_drops"] == 0


# ---------------------------------------------------------------------------
# Hostile frames in a valid pcap

def short_ip_frames():
    """Frames whose IP header is cut short (less than 20 bytes of IPv4 or 40 of
    IPv6 after the Ethernet header)."""
    return [
        eth(b""),                                   # Ethernet header only (IPv4 type)
        eth(ipv4(b"")[:10]),                        # IPv4 header cut at 10 bytes
        eth(b"\x60\x00\x00\x00\x00\x10\x06", ethertype=0x86DD),  # IPv6 cut at 7
    ]


def garbage_frames(with_short_ip=True):
    rng = random.Random(20261122)
    frames = []
    # 1000 frames of random bytes.
    for _ in range(1000):
        frames.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 1514))))
    if with_short_ip:
        frames += short_ip_frames()
    req = b"GET /after-garbage HTTP/1.1\r\nHost: g.test\r\nUser-Agent: g/1\r\n\r\n"
    frames += [
        # TCP header cut short (8 of 20 bytes).
        eth(ipv4(tcp(b"")[:8])),
        # IPv4 header claiming options (IHL 15) in a short frame.
        eth(bytes([0x4F]) + ipv4(tcp(b""))[1:24]),
        # IPv4 total length far past the frame.
        eth(ipv4(tcp(b"GET / HTTP/1.1\r\n"), total_len=9000)),
        # TCP data offset pointing past the frame.
        eth(ipv4(struct.pack("!HHIIBBHHH", 40001, 8080, 1, 1, 15 << 4, 0x18, 1, 0, 0))),
        # 64 KB of 'A' as one TCP payload, and the same after a request line.
        tcp4_frame(b"A" * 65000, sport=40002),
        tcp4_frame(b"GET /aaaa HTTP/1.1\r\n" + b"A" * 64000, sport=40003),
        # A request line with no CRLF at all.
        tcp4_frame(b"GET /no-crlf-at-all HTTP/1.1", sport=40004),
        # IPv4 fragments: first (MF) and a later one.
        eth(ipv4(tcp(b"GET /frag HTTP/1.1\r\nHost: f\r\n\r\n", sport=40005), flags_frag=0x2000)),
        eth(ipv4(b"tail of a fragment", flags_frag=0x0003, ident=7)),
        # Non-IP ethertypes: ARP and an unknown one.
        eth(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, ethertype=0x0806),
        eth(b"\xde\xad" * 30, ethertype=0x88B5),
        # Truncated VLAN tag.
        eth(b"\x00", ethertype=0x8100),
        # Still working afterwards: a valid request.
        tcp4_frame(req, sport=40006),
    ]
    return frames


def check_garbage_replay(tmp_path, frames):
    pcap = tmp_path / "garbage.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    t0 = time.monotonic()
    r = replay(pcap)
    elapsed = time.monotonic() - t0
    no_panic(r)
    assert r.returncode == 0, r.stderr[-3000:]
    assert elapsed < 60
    events = json_lines(r.stdout)
    paths = [e["http"].get("path") for e in events if e["kind"] == "http_request"]
    assert "/after-garbage" in paths, f"the valid request after the garbage was missed: {paths}"
    s = summary(r.stderr)
    rep, k = s["replay"], s["kernel"]
    assert rep["packets"] == len(frames), s
    assert rep["decode_errors"] == 0
    assert rep["skipped_short"] >= 1, s            # random frames under 14 bytes
    assert rep["resegmented"] >= 2, s              # the two 64 KB frames
    assert k["packets_seen"] + rep["skipped_short"] + rep["skipped_link_type"] >= len(frames), s
    assert k["non_ip"] >= 2, s
    assert k["fragments"] >= 1, s
    assert k["short_headers"] >= 2, s
    assert k["truncated"] >= 1, s                  # GET /aaaa + 64 KB with no end of headers
    assert k["ringbuf_drops"] == 0, s
    return s


def test_replay_garbage_frames_are_counted_skips(tmp_path):
    """Everything hostile except IP headers cut short (see the test below)."""
    check_garbage_replay(tmp_path, garbage_frames(with_short_ip=False))


def test_replay_full_garbage_including_short_ip_headers(tmp_path):
    check_garbage_replay(tmp_path, garbage_frames(with_short_ip=True))


@pytest.mark.parametrize("i", range(3), ids=["eth_only_ipv4", "ipv4_cut_10", "ipv6_cut_7"])
def test_replay_short_ip_header_is_a_counted_skip(tmp_path, i):
    frame = short_ip_frames()[i]
    ok = tcp4_frame(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
    pcap = tmp_path / "short.pcap"
    pcap.write_bytes(pcap_bytes([ok, frame, ok]))
    r = replay(pcap)
    no_panic(r)
    assert r.returncode == 0, r.stderr
    assert len([e for e in json_lines(r.stdout) if e["kind"] == "http_request"]) == 2
    assert summary(r.stderr)["replay"]["packets"] == 3


def record_then_cut(tmp_path) -> Path:
    frames = [tcp4_frame(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n", sport=41000 + i) for i in range(3)]
    data = pcap_bytes(frames)
    cut = len(data) - 20  # in the middle of the third record's data
    p = tmp_path / "cut.pcap"
    p.write_bytes(data[:cut])
    return p


def test_replay_pcap_truncated_mid_record(tmp_path):
    r = replay(record_then_cut(tmp_path))
    no_panic(r)
    assert r.returncode != 0
    assert "packet #" in r.stderr, r.stderr


@pytest.mark.parametrize("content", ["empty", "random"])
def test_replay_not_a_pcap(tmp_path, content):
    p = tmp_path / f"{content}.pcap"
    p.write_bytes(b"" if content == "empty" else random.Random(7).randbytes(4096))
    r = replay(p)
    no_panic(r)
    assert r.returncode != 0
    err = r.stderr.lower()
    assert str(p).lower() in err and "pcap" in err, r.stderr
    assert r.stdout == ""

"""Live capture: real clients in one namespace, the sensor on the server's veth
in the other, events checked field by field."""

from __future__ import annotations

import json
import random
import re
import socket
import signal
import string
import time
import uuid

import pytest

import gwlib
from gwlib import curl, is_req, is_resp, raw_http


def uid() -> str:
    return uuid.uuid4().hex[:12]


def one_request(sensor, path, timeout=8.0):
    """Exactly one request event for `path` (waits a little for stray duplicates)."""
    evs = sensor.wait_for(is_req(path), timeout=timeout, settle=0.3)
    assert len(evs) == 1, f"expected one http_request for {path}, got {len(evs)}: {evs}"
    return evs[0]


def check_response(sensor, client_port, server_port, client_ip, server_ip):
    resp = sensor.wait_for(is_resp(client_port, server_port))
    assert len(resp) == 1, resp
    r = resp[0]
    assert r["direction"] == "egress"
    assert r["src"] == {"ip": server_ip, "port": server_port}
    assert r["dst"] == {"ip": client_ip, "port": client_port}
    assert r["http"]["status"] == 200
    assert "method" not in r["http"] and "path" not in r["http"]
    assert r["http"]["headers"].get("content-type") == "application/json"
    return r


# ---------------------------------------------------------------------------
# Real curl

CURL_CASES = {
    "get_v4": dict(family=4, port=8080, method="GET"),
    "post_v4": dict(family=4, port=8080, method="POST"),
    "get_v4_port_18443": dict(family=4, port=18443, method="GET"),
    "get_v6": dict(family=6, port=8080, method="GET"),
}


@pytest.mark.parametrize("case", list(CURL_CASES), ids=list(CURL_CASES))
def test_curl_request_and_response(topo, sensor, case):
    c = CURL_CASES[case]
    tag = uid()
    server_ip = topo.srv4 if c["family"] == 4 else topo.srv6
    client_ip = topo.cli4 if c["family"] == 4 else topo.cli6
    hostpart = server_ip if c["family"] == 4 else f"[{server_ip}]"
    path = f"/api/v1/items/{tag}?q=1&case={case}"
    url = f"http://{hostpart}:{c['port']}{path}"
    ua = f"gwt-agent/{tag}"
    rid = f"req-{tag}"
    xff = "203.0.113.7, 198.51.100.9"
    args = ["-A", ua, "-H", f"X-Request-Id: {rid}", "-H", f"X-Forwarded-For: {xff}"]
    body = f"name=gwt&tag={tag}"
    if c["method"] == "POST":
        args += ["-d", body]

    code, ip, port, _ = curl(topo, url, *args)
    assert code == 200

    ev = one_request(sensor, path)
    h = ev["http"]
    assert ev["kind"] == "http_request"
    assert ev["source"] == "net"
    assert ev["direction"] == "ingress"
    assert ev["iface"] == topo.srv_if
    assert ev["src"] == {"ip": client_ip, "port": port}
    assert ev["dst"] == {"ip": server_ip, "port": c["port"]}
    assert h["method"] == c["method"]
    assert h["path"] == gwlib.masked(path)
    assert h["path_truncated"] is False
    assert h["version"] == "HTTP/1.1"
    assert h["headers"]["host"] == f"{hostpart}:{c['port']}"
    assert h["headers"]["user-agent"] == ua
    assert h["headers"]["x-request-id"] == rid
    assert h["headers"]["x-forwarded-for"] == xff
    assert h["anomalies"] == []
    assert h["credentials"] == {}
    assert h["segments"] == 1
    if c["method"] == "POST":
        assert h["headers"]["content-type"] == "application/x-www-form-urlencoded"
        assert h["headers"]["content-length"] == str(len(body))
        assert h["content_length"] == len(body)
        # Host, User-Agent, Accept, X-Request-Id, X-Forwarded-For, Content-Length, Content-Type
        assert h["header_count"] == 7
    else:
        assert h["header_count"] == 5
    check_response(sensor, port, c["port"], client_ip, server_ip)


# ---------------------------------------------------------------------------
# Raw sockets

def test_pipelined_requests_in_one_segment(topo, sensor):
    tag = uid()
    paths = [f"/pipe/{tag}/1", f"/pipe/{tag}/2", f"/pipe/{tag}/3?x=y"]
    body = b'{"k":"v"}'
    wire = (
        f"GET {paths[0]} HTTP/1.1\r\nHost: pipe.test\r\nUser-Agent: pipe/1\r\n\r\n".encode()
        + f"POST {paths[1]} HTTP/1.1\r\nHost: pipe.test\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        + f"GET {paths[2]} HTTP/1.1\r\nHost: pipe.test\r\nUser-Agent: pipe/3\r\n\r\n".encode()
    )
    res = raw_http(topo, [wire], nodelay=True)
    assert res.response.count(b"HTTP/1.1 200") == 3, res.response[:500]
    evs = sensor.wait_for(lambda e: e.get("kind") == "http_request"
                          and e["http"].get("path", "").startswith(f"/pipe/{tag}/"),
                          count=3, timeout=5, settle=0.3)
    assert [e["http"]["path"] for e in evs] == [gwlib.masked(p) for p in paths]
    assert [e["http"]["method"] for e in evs] == ["GET", "POST", "GET"]
    assert evs[1]["http"]["content_length"] == len(body)
    assert all(e["src"]["port"] == res.local_port for e in evs)


def pad_headers(n, line_len=100):
    out = []
    for i in range(n):
        name = f"X-Pad-{i:03d}: "
        out.append(name + "p" * (line_len - len(name) - 2) + "\r\n")
    return "".join(out)


def test_6kb_header_block(topo, sensor):
    tag = uid()
    path = f"/big/{tag}"
    req = (f"GET {path} HTTP/1.1\r\nHost: big.test\r\nUser-Agent: big/1\r\n"
           + pad_headers(60) + "\r\n").encode()
    assert 6000 < len(req) < 7000
    res = raw_http(topo, [req])
    assert b"200" in res.response.split(b"\r\n", 1)[0]
    ev = one_request(sensor, path)
    h = ev["http"]
    assert h["headers"]["host"] == "big.test"
    assert h["headers"]["user-agent"] == "big/1"
    assert h["header_count"] == 62
    assert h["header_bytes"] == len(req)
    assert "truncated" not in h["anomalies"]


def test_20kb_header_block_is_flagged_truncated(topo, sensor):
    tag = uid()
    path = f"/huge/{tag}"
    # 20 headers of 1000 bytes: past the 16 KB parse window.
    req = (f"GET {path} HTTP/1.1\r\nHost: huge.test\r\n" + pad_headers(20, 1000) + "\r\n").encode()
    assert len(req) > 20000
    raw_http(topo, [req])
    ev = one_request(sensor, path)
    assert ev["http"]["method"] == "GET"
    assert ev["http"]["headers"]["host"] == "huge.test"
    assert "truncated" in ev["http"]["anomalies"]


def test_header_block_split_across_two_segments(topo, sensor):
    tag = uid()
    path = f"/split/{tag}"
    req = (f"GET {path} HTTP/1.1\r\nHost: split.test\r\nUser-Agent: split/1\r\n"
           f"X-Request-Id: {tag}\r\nAccept: */*\r\n\r\n").encode()
    cut = req.index(b"X-Request-Id") + len(b"X-Req")  # in the middle of a header name
    res = raw_http(topo, [req[:cut], req[cut:]], nodelay=True, pause=0.2)
    assert b" 200 " in res.response.split(b"\r\n", 1)[0]
    ev = one_request(sensor, path)
    h = ev["http"]
    assert h["segments"] == 2
    assert h["headers"] == {"host": "split.test", "user-agent": "split/1", "x-request-id": tag}
    assert h["header_count"] == 4
    assert h["header_bytes"] == len(req)
    assert h["anomalies"] == []


SPLIT_CASES = [
    # (method, cut offset in the request)
    pytest.param("GET", 4, id="GET-after-method"),
    pytest.param("GET", 9, id="GET-in-path"),
    pytest.param("GET", -14, id="GET-in-version"),
    pytest.param("POST", 5, id="POST-after-method"),
    pytest.param("GET", 1, id="GET-cut-1"),
    pytest.param("GET", 2, id="GET-cut-2"),
    pytest.param("GET", 3, id="GET-cut-3"),
    pytest.param("POST", 4, id="POST-cut-4"),
    pytest.param("OPTIONS", 7, id="OPTIONS-cut-7"),
]


@pytest.mark.parametrize("method,cut", SPLIT_CASES)
def test_request_line_split_across_segments(topo, sensor, method, cut):
    tag = uid()
    path = f"/splitline/{tag}"
    req = (f"{method} {path} HTTP/1.1\r\nHost: line.test\r\nUser-Agent: line/1\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    cut = cut if cut > 0 else req.index(b"\r\n") + cut + len(" HTTP/1.1")
    res = raw_http(topo, [req[:cut], req[cut:]], nodelay=True, pause=0.2)
    assert b" 200 " in res.response.split(b"\r\n", 1)[0]
    # The response proves the request went through the veth the sensor watches.
    sensor.wait_for(is_resp(res.local_port, 8080))
    ev = one_request(sensor, path, timeout=2)
    h = ev["http"]
    assert h["method"] == method
    assert h["segments"] == 2
    assert h["headers"]["host"] == "line.test"
    assert h["header_bytes"] == len(req)


# ---------------------------------------------------------------------------
# Credentials

def rand_secret(rng, n=40):
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def test_credentials_hashed_and_never_leaked(topo, sensor):
    rng = random.SystemRandom()
    tokens = [rand_secret(rng) for _ in range(4)]
    # Requests 0 and 3 share a token.
    per_request = [tokens[0], tokens[1], tokens[2], tokens[0], tokens[3]]
    cookie = "session=" + rand_secret(rng, 32)
    api_key = rand_secret(rng, 36)
    basic_user, basic_pass = "gwt" + rand_secret(rng, 8), rand_secret(rng, 24)
    tag = uid()
    paths = []
    for i, tok in enumerate(per_request):
        path = f"/cred/{tag}/{i}"
        paths.append(path)
        code, *_ = curl(topo, f"http://{topo.srv4}:8080{path}",
                        "-H", f"Authorization: Bearer {tok}",
                        "-H", f"Cookie: {cookie}", "-H", f"X-Api-Key: {api_key}")
        assert code == 200
    basic_path = f"/cred/{tag}/basic"
    proxy_secret = rand_secret(rng, 30)
    proxy_auth = f'Digest username="u", response="{proxy_secret}"'
    set_cookie = f"sid={rand_secret(rng, 32)}; Path=/; HttpOnly"
    _, _, basic_port, _ = curl(topo, f"http://{topo.srv4}:8080{basic_path}",
                               "-u", f"{basic_user}:{basic_pass}",
                               "-H", f"Proxy-Authorization: {proxy_auth}",
                               "-H", f"X-Gwt-Set-Cookie: {set_cookie}")

    evs = [one_request(sensor, p) for p in paths]
    creds = [e["http"]["credentials"] for e in evs]
    for c, tok in zip(creds, per_request):
        assert set(c) == {"authorization", "cookie", "x-api-key"}, c
        a = c["authorization"]
        assert a["scheme"] == "bearer"
        assert a["length"] == len("Bearer " + tok)
        assert re.fullmatch(r"[0-9a-f]{16}", a["hash"])
        assert a["hash_truncated"] is False
        assert c["cookie"]["length"] == len(cookie)
        assert c["cookie"]["scheme"] == "other"
        assert c["x-api-key"]["length"] == len(api_key)
    hashes = [c["authorization"]["hash"] for c in creds]
    assert hashes[0] == hashes[3], "same token must give the same hash"
    assert len({hashes[0], hashes[1], hashes[2], hashes[4]}) == 4, hashes
    assert len({c["cookie"]["hash"] for c in creds}) == 1
    assert len({c["x-api-key"]["hash"] for c in creds}) == 1
    assert creds[0]["cookie"]["hash"] != creds[0]["x-api-key"]["hash"]

    basic = one_request(sensor, basic_path)["http"]["credentials"]
    assert basic["authorization"]["scheme"] == "basic"
    import base64
    b64 = base64.b64encode(f"{basic_user}:{basic_pass}".encode()).decode()
    assert basic["authorization"]["length"] == len("Basic " + b64)
    assert basic["proxy-authorization"]["scheme"] == "digest"
    assert basic["proxy-authorization"]["length"] == len(proxy_auth)
    resp = sensor.wait_for(is_resp(basic_port, 8080))[0]["http"]["credentials"]
    assert set(resp) == {"set-cookie"}, resp
    assert resp["set-cookie"]["length"] == len(set_cookie)
    assert resp["set-cookie"]["scheme"] == "other"

    # No secret, in any form we sent, anywhere the sensor writes.
    assert sensor.stop() == 0
    secrets = tokens + [cookie, cookie.split("=", 1)[1], api_key, basic_pass, b64,
                        proxy_secret, set_cookie.split(";")[0].split("=", 1)[1]]
    outputs = {
        "stdout": sensor.stdout_path.read_text(errors="replace"),
        "events.jsonl": sensor.jsonl_path.read_text(errors="replace"),
        "stderr": sensor.stderr(),
    }
    assert outputs["events.jsonl"].count("\n") >= len(paths) + 1
    for where, text in outputs.items():
        for s in secrets:
            assert s not in text, f"a secret leaked into {where}"
            assert s[:12] not in text, f"a secret prefix leaked into {where}"


# ---------------------------------------------------------------------------
# Anomalies

ANOMALY_CASES = {
    "cl_and_te": ("POST {p} HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "cl_and_te"),
    "duplicate_content_length": ("POST {p} HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
                                 "Content-Length: 6\r\n\r\nhello!", "duplicate_content_length"),
    "space_before_colon": ("POST {p} HTTP/1.1\r\nHost: a.test\r\nContent-Length : 5\r\n\r\nhello",
                           "malformed_header_line"),
    "bare_lf": ("GET {p} HTTP/1.1\nHost: a.test\nUser-Agent: lf/1\n\n", "bare_lf"),
}


@pytest.mark.parametrize("case", list(ANOMALY_CASES), ids=list(ANOMALY_CASES))
def test_anomalies(topo, sensor, case):
    template, flag = ANOMALY_CASES[case]
    path = f"/anomaly/{case}/{uid()}"
    raw_http(topo, [template.format(p=path).encode()], timeout=2)
    ev = one_request(sensor, path)
    assert flag in ev["http"]["anomalies"], ev["http"]
    assert ev["http"]["headers"].get("host") == "a.test"


# ---------------------------------------------------------------------------
# Detach

def bpf_progs() -> list[dict]:
    r = gwlib.run(["bpftool", "-j", "prog", "show"])
    return json.loads(r.stdout or "[]")


GW_PROG_NAMES = {"gw_tc_ingress", "gw_tc_egress"}


def attached_prog_ids(topo) -> set[int]:
    """Program ids attached to the server veth: tc filters and tcx entries from
    `bpftool net`, plus tcx links from `bpftool link` (bpftool 7.1 shows those
    only as link type 11, without an ifindex)."""
    ids = set()
    r = topo.in_srv("bpftool", "-j", "net", "show", "dev", topo.srv_if, check=False)
    try:
        blocks = json.loads(r.stdout or "[]")
    except ValueError:
        blocks = []
    for block in blocks if isinstance(blocks, list) else []:
        for kind in ("tc", "tcx"):
            for att in block.get(kind, []) or []:
                pid = att.get("prog_id", att.get("id"))
                if pid is not None:
                    ids.add(pid)
    ifindex = int(topo.in_srv("cat", f"/sys/class/net/{topo.srv_if}/ifindex").stdout)
    links = json.loads(gwlib.run(["bpftool", "-j", "link", "show"]).stdout or "[]")
    for link in links:
        if link.get("type") in (11, "tcx") and link.get("ifindex", ifindex) == ifindex:
            ids.add(link.get("prog_id"))
    return ids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_clean_detach(topo, httpd, sensor_factory, sig):
    gwlib.need("bpftool", "tc")
    before = {p["id"] for p in bpf_progs() if p.get("name") in GW_PROG_NAMES}
    s = sensor_factory(f"detach-{sig.name}")
    ours = {p["id"] for p in bpf_progs()
            if p.get("name") in GW_PROG_NAMES and p["id"] not in before}
    assert len(ours) == 2, f"expected gw_tc_ingress and gw_tc_egress loaded: {bpf_progs()}"
    attached = attached_prog_ids(topo)
    assert ours <= attached, f"programs {ours} not attached to {topo.srv_if}: {attached}"
    # It works while attached.
    path = f"/detach/{uid()}"
    curl(topo, f"http://{topo.srv4}:8080{path}")
    one_request(s, path)

    assert s.stop(sig) == 0, s.stderr()
    for direction in ("ingress", "egress"):
        out = topo.in_srv("tc", "filter", "show", "dev", topo.srv_if, direction,
                          check=False).stdout
        assert "gw_" not in out and "gatewatch" not in out, out
        assert out.strip() == "", f"tc filter {direction} not empty: {out!r}"
    assert not (attached_prog_ids(topo) & ours), "programs still attached after exit"
    # Program ids are never reused, so ours must simply be gone (another sensor
    # elsewhere on the machine may have its own gw_tc_* programs loaded).
    left = {p["id"] for p in bpf_progs() if p.get("name") in GW_PROG_NAMES}
    assert not (left & ours), f"programs still loaded after exit: {left & ours}"
    assert not (left - before), f"new gw_tc_* programs appeared: {left - before}"
    # And traffic after detach produces nothing.
    curl(topo, f"http://{topo.srv4}:8080/after-detach")
    assert not [e for e in s.events() if e.get("http", {}).get("path") == "/after-detach"]


# ---------------------------------------------------------------------------
# Output format

def test_every_line_is_json_and_matches_schema(topo, httpd, sensor_factory):
    # Stats every second so sensor_stats events are part of what is validated.
    s = sensor_factory("schema", config="[sensor]\nstats_interval_secs = 1\n")
    tag = uid()
    curl(topo, f"http://{topo.srv4}:8080/schema/{tag}/a", "-A", "schema/1",
         "-H", "Authorization: Bearer abc.def.ghi", "-H", "Cookie: a=b")
    curl(topo, f"http://[{topo.srv6}]:18443/schema/{tag}/b", "-X", "PUT", "-d", "{}")
    for template, _ in ANOMALY_CASES.values():
        raw_http(topo, [template.format(p=f"/schema/{tag}/anomaly").encode()], timeout=1)
    raw_http(topo, [f"GET /schema/{tag}/\xe9\x01 HTTP/1.1\r\nHost: x\x1b[31m\r\n"
                    f"User-Agent: caf\xe9\r\n\r\n".encode("latin-1")], timeout=1)
    s.wait_for(lambda e: e.get("kind") == "sensor_stats", timeout=5)
    s.wait_for(is_req(f"/schema/{tag}/b"))
    assert s.stop() == 0

    lines = {
        "stdout": s.stdout_path.read_text().splitlines(),
        "events.jsonl": s.jsonl_path.read_text().splitlines(),
    }
    assert lines["stdout"] == lines["events.jsonl"], "stdout and jsonl outputs differ"
    events = []
    for where, ls in lines.items():
        assert ls, f"no events in {where}"
        for n, line in enumerate(ls, 1):
            try:
                events.append(json.loads(line))
            except ValueError as e:
                pytest.fail(f"{where}:{n} is not JSON: {e}: {line[:300]!r}")
    # Alerts share the stream; they are OCSF findings, checked against their own schema.
    alerts = [e for e in events if "class_uid" in e]
    events = [e for e in events if "class_uid" not in e]
    kinds = {e["kind"] for e in events}
    assert {"http_request", "http_response", "sensor_stats"} <= kinds

    if not gwlib.EVENT_SCHEMA.exists():
        pytest.skip(f"{gwlib.EVENT_SCHEMA} does not exist yet: JSON checked, schema not")
    import jsonschema
    schema = json.loads(gwlib.EVENT_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = []
    for ev in events:
        for err in validator.iter_errors(ev):
            errors.append(f"{err.message} at {list(err.absolute_path)} in {json.dumps(ev)[:300]}")
    alert_schema = json.loads((gwlib.REPO / "schemas" / "alert.schema.json").read_text())
    alert_validator = cls(alert_schema, format_checker=cls.FORMAT_CHECKER)
    for a in alerts:
        for err in alert_validator.iter_errors(a):
            errors.append(f"alert: {err.message} at {list(err.absolute_path)}")
    assert not errors, "\n".join(errors[:20])


def test_request_waiting_on_a_silent_flow_is_released(topo, sensor):
    """A JSON-RPC POST whose body never comes, on a connection that stays open
    and silent (no FIN, no next bytes): the sensor's once-a-second sweep takes it
    out of the kernel's flow table after capture.body_wait_ms and emits it with
    body_scan "ended", instead of letting the LRU drop it uncounted."""
    tag = uid()
    path = f"/silent/{tag}"
    req = (f"POST {path} HTTP/1.1\r\nHost: silent.test\r\nContent-Type: application/json\r\n"
           f"MCP-Protocol-Version: 2025-06-18\r\nContent-Length: 64\r\n\r\n").encode()
    s = gwlib.netns_socket(topo.cli_ns, socket.AF_INET)
    try:
        s.settimeout(5)
        s.connect((topo.srv4, 8080))
        s.sendall(req)
        # The connection stays open and silent while we wait (1 s wait + 1 s sweep).
        ev = one_request(sensor, path, timeout=6)
        assert ev["http"]["mcp"]["body_scan"] == "ended"
        assert ev["http"]["method"] == "POST"
    finally:
        s.close()

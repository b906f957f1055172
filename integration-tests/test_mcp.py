"""MCP awareness end to end: the official MCP Python SDK (server in the server
namespace, client in the client namespace) in every wire form it speaks, the
sensor's events and its MCP session tracker, one test per MCP rule with real
traffic against the same SDK server, and a replay of a recorded clean session.

Tests that need the kernel's MCP fields (JSON-RPC method, session-id hash) skip
with a reason when the kernel in this build does not emit them yet.
"""

from __future__ import annotations

import base64
import json
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import gwlib

HERE = Path(__file__).resolve().parent
SDK_PORTS = {"json": 8801, "sse-replies": 8802, "legacy-sse": 8803, "token": 8804}
TOKEN = "e2e-" + uuid.uuid4().hex
# Sessions older than the sensor cannot exist in these tests: no warm-up.
MCP_CONFIG = "[mcp]\nwarmup_secs = 0\n"
INIT_VERSION = "2025-11-25"


def mcp_rules_fired(sensor) -> list[dict]:
    return [a for a in sensor.alerts()
            if a["finding_info"]["analytic"]["uid"].startswith("GW-MCP")]


def kernel_reads_mcp(events) -> bool:
    """The kernel in this build fills http.mcp (JSON-RPC method) on requests."""
    return any("mcp" in e.get("http", {}) for e in events if e.get("kind") == "http_request")


def need_kernel_mcp(source, timeout=5.0):
    """Skip unless the kernel fills the MCP fields. `source` is a sensor (its
    events are waited for, bounded: they reach stdout a moment after the reply)
    or a list of events."""
    deadline = time.monotonic() + (timeout if hasattr(source, "events") else 0)
    while True:
        events = source.events() if hasattr(source, "events") else source
        if kernel_reads_mcp(events):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    pytest.skip("the kernel in this build does not emit the MCP fields yet "
                "(http.mcp / http.mcp_session: branch mcp-kernel not merged)")


# --------------------------------------------------------------------------
# The SDK server (one process per transport) and client.

@pytest.fixture(scope="module")
def mcp_servers(topo):
    try:
        import mcp  # noqa: F401
    except ImportError:
        pytest.skip("the mcp SDK is missing: run integration-tests/setup.sh")
    procs = []
    specs = [("json", ["--check-origin"]), ("sse-replies", []), ("legacy-sse", []),
             ("token", ["--token", TOKEN])]
    try:
        for name, extra in specs:
            transport = "json" if name == "token" else name
            p = subprocess.Popen(
                ["ip", "netns", "exec", topo.srv_ns, sys.executable, str(HERE / "mcp_server.py"),
                 "--transport", transport, "--host", topo.srv4, "--port", str(SDK_PORTS[name]), *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(p)
            ready, _, _ = select.select([p.stdout], [], [], 20)
            line = p.stdout.readline() if ready else b""
            if line.strip() != b"ready":
                err = p.stderr.read().decode(errors="replace") if p.poll() is not None else ""
                pytest.fail(f"MCP server {name} did not start: {line!r} {err}")
        yield SDK_PORTS
    finally:
        for p in procs:
            gwlib.stop_process(p)


def sdk_client(topo, url, *args, timeout=60) -> dict:
    r = gwlib.run(["ip", "netns", "exec", topo.cli_ns, sys.executable, str(HERE / "mcp_client.py"),
                   url, *args], check=False, timeout=timeout)
    assert r.returncode == 0, f"SDK client failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Raw HTTP from the client namespace (optionally from a second address).

def http(topo, port, method="POST", path="/mcp", body=None, headers=None, source=None,
         timeout=5.0):
    """One HTTP/1.1 request on its own connection; returns (status, headers, body)."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {"Host": f"{topo.srv4}:{port}", "Accept": "application/json, text/event-stream",
            "Connection": "close"}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
        hdrs["Content-Length"] = str(len(data))
    hdrs.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None)
    s = gwlib.netns_socket(topo.cli_ns)
    try:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect((topo.srv4, port))
        s.sendall(head.encode() + b"\r\n" + data)
        raw = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            raw += chunk
            if b"\r\n\r\n" in raw and _complete(raw):
                break
    finally:
        s.close()
    head_b, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_b.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    rh = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        rh[k.strip().lower()] = v.strip()
    return status, rh, rest


def _complete(raw: bytes) -> bool:
    head, _, rest = raw.partition(b"\r\n\r\n")
    for ln in head.split(b"\r\n")[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(rest) >= int(v.strip() or 0)
    return False


def rpc(method, id_=1, **params):
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    if id_ is not None:
        msg["id"] = id_
    return msg


def initialize(topo, port=SDK_PORTS["json"], complete=True, source=None) -> str:
    """An SDK-server session by hand: initialize (and notifications/initialized)."""
    status, h, _ = http(topo, port, body=rpc("initialize", protocolVersion=INIT_VERSION,
                                             capabilities={}, clientInfo={"name": "raw", "version": "0"}),
                        source=source)
    assert status == 200 and "mcp-session-id" in h, (status, h)
    sid = h["mcp-session-id"]
    if complete:
        status, _, _ = http(topo, port, body=rpc("notifications/initialized", id_=None),
                            headers=session_headers(sid), source=source)
        assert status == 202, status
    return sid


def session_headers(sid, version=INIT_VERSION):
    return {"Mcp-Session-Id": sid, "MCP-Protocol-Version": version}


@pytest.fixture
def mcp_sensor(mcp_servers, sensor_factory):
    return sensor_factory(config=MCP_CONFIG)


def time_key(e) -> str:
    """Sortable event time: the fraction padded to 9 digits (RFC 3339 drops trailing zeros)."""
    t = e["time"].rstrip("Z")
    whole, _, frac = t.partition(".")
    return f"{whole}.{frac.ljust(9, '0')}"


def requests_to(sensor, port):
    """Requests in capture order. Output order is not capture order: rule
    workers shard events by flow, and each connection of the SDK is a flow."""
    return sorted((e for e in sensor.events()
                   if e.get("kind") == "http_request" and e.get("dst", {}).get("port") == port),
                  key=time_key)


def rpc_methods(events):
    return [e["http"]["mcp"].get("method") for e in events if e["http"].get("mcp", {}).get("method")]


# --------------------------------------------------------------------------
# Clean SDK runs: methods in order, version, session; no MCP rule fires.

def clean_run(topo, sensor, port, url_path, *client_args):
    out = sdk_client(topo, f"http://{topo.srv4}:{port}{url_path}", *client_args)
    assert out["tools"] == ["echo"] and out["result"] == ["hello"], out
    sensor.wait_for(lambda e: e.get("kind") == "http_response"
                    and e.get("src", {}).get("port") == port, count=3, settle=1.0)
    reqs = requests_to(sensor, port)
    assert reqs, "no request events"
    return out, reqs


@pytest.mark.parametrize("flavour", ["json", "sse-replies"])
def test_sdk_session_based_streamable_http(topo, mcp_sensor, flavour):
    port = SDK_PORTS[flavour]
    out, reqs = clean_run(topo, mcp_sensor, port, "/mcp", "--mode", "legacy")
    assert out["protocol_version"] == INIT_VERSION
    # Header-level facts need no kernel MCP support.
    assert any(e["http"]["headers"].get("mcp-protocol-version") == INIT_VERSION for e in reqs)
    assert "DELETE" in [e["http"]["method"] for e in reqs], "the SDK ends its session"
    assert mcp_rules_fired(mcp_sensor) == []
    need_kernel_mcp(reqs)
    assert rpc_methods(reqs) == ["initialize", "notifications/initialized", "tools/list", "tools/call"]
    issued = [e for e in mcp_sensor.events() if e.get("kind") == "http_response"
              and e.get("mcp_context", {}).get("session", {}).get("state") == "issued"]
    assert len(issued) == 1, issued
    sid_hash = issued[0]["mcp_context"]["session"]["hash"]
    call = [e for e in reqs if e["http"].get("mcp", {}).get("method") == "tools/call"][0]
    s = call["mcp_context"]["session"]
    assert (s["hash"], s["state"], s["initialized"], s["version"]) == (sid_hash, "live", True, INIT_VERSION)
    assert s["methods"]["tools/list"] == 1 and s["issuer"] == topo.cli4
    ended = [e for e in mcp_sensor.events() if e.get("mcp_context", {}).get("session", {}).get("ended_here")]
    assert ended and ended[0]["mcp_context"]["session"]["ended_by"] == "delete"
    assert mcp_rules_fired(mcp_sensor) == []


def test_sdk_stateless_default_mode(topo, mcp_sensor):
    port = SDK_PORTS["json"]
    out, reqs = clean_run(topo, mcp_sensor, port, "/mcp")
    assert out["protocol_version"] == "2026-07-28"
    assert [e["http"]["headers"].get("mcp-protocol-version") for e in reqs] == ["2026-07-28"] * 3
    assert [e["mcp_context"]["transport"] for e in reqs] == ["stateless"] * 3
    assert reqs[-1]["mcp_context"]["client"]["versions"] == ["2026-07-28"]
    assert mcp_rules_fired(mcp_sensor) == []
    need_kernel_mcp(reqs)
    assert rpc_methods(reqs) == ["server/discover", "tools/list", "tools/call"]
    call = reqs[-1]
    assert call["http"]["mcp"]["params_name"] == "echo"
    assert call["mcp_context"]["header_check"] == {"method_matches": True, "name_matches": True}
    assert all("mcp_session" not in e["http"] for e in reqs)
    assert mcp_rules_fired(mcp_sensor) == []


def test_sdk_legacy_sse_transport(topo, mcp_sensor):
    port = SDK_PORTS["legacy-sse"]
    out, reqs = clean_run(topo, mcp_sensor, port, "/sse", "--mode", "legacy", "--legacy-sse")
    assert out["protocol_version"] == INIT_VERSION
    posts = [e for e in reqs if e["http"]["method"] == "POST"]
    assert len(posts) == 4 and all(e["http"]["path"].startswith("/messages/?session_id=") for e in posts)
    # Off loopback, session_id= in a URL is flagged unless it belongs to a legacy
    # session the sensor saw issued, which needs the kernel's SSE endpoint field.
    if kernel_reads_mcp(reqs):
        assert mcp_rules_fired(mcp_sensor) == []
    need_kernel_mcp(reqs)
    assert rpc_methods(posts) == ["initialize", "notifications/initialized", "tools/list", "tools/call"]
    assert all(e["mcp_context"]["transport"] == "sse" for e in posts)
    s = posts[-1]["mcp_context"]["session"]
    assert s["state"] == "live" and s["initialized"] and s["issuer"] == topo.cli4
    assert mcp_rules_fired(mcp_sensor) == []


# --------------------------------------------------------------------------
# One test per MCP rule, with real traffic against the SDK server.

def test_gw_mcp_001_request_without_session_id(topo, mcp_sensor):
    initialize(topo)
    status, _, _ = http(topo, SDK_PORTS["json"], body=rpc("tools/list", id_=2),
                        headers={"MCP-Protocol-Version": INIT_VERSION})
    assert status == 400
    need_kernel_mcp(mcp_sensor)
    mcp_sensor.wait_alert("GW-MCP-001")


@pytest.fixture
def second_client_address(topo):
    addr = "10.231.0.3"
    topo.in_cli("ip", "addr", "add", f"{addr}/24", "dev", topo.cli_if, check=False)
    yield addr
    topo.in_cli("ip", "addr", "del", f"{addr}/24", "dev", topo.cli_if, check=False)


def test_gw_mcp_002_session_from_second_address(topo, mcp_sensor, second_client_address):
    sid = initialize(topo)
    status, _, _ = http(topo, SDK_PORTS["json"], body=rpc("tools/list", id_=2),
                        headers=session_headers(sid), source=second_client_address)
    assert status == 200, "the SDK server does not bind sessions to addresses"
    need_kernel_mcp(mcp_sensor)
    a = mcp_sensor.wait_alert("GW-MCP-002")[0]
    assert second_client_address in a["message"]


def test_gw_mcp_003_never_issued_and_reused_after_delete(topo, mcp_sensor):
    port = SDK_PORTS["json"]
    status, _, _ = http(topo, port, body=rpc("tools/list", id_=2),
                        headers=session_headers(uuid.uuid4().hex))
    assert status == 404
    need_kernel_mcp(mcp_sensor)
    mcp_sensor.wait_alert("GW-MCP-003")
    sid = initialize(topo)
    assert http(topo, port, method="DELETE", headers=session_headers(sid))[0] == 200
    assert http(topo, port, body=rpc("tools/list", id_=3), headers=session_headers(sid))[0] == 404
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if any("after it ended (delete)" in a["message"] for a in mcp_rules_fired(mcp_sensor)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no reuse alert: {mcp_rules_fired(mcp_sensor)}")


def test_gw_mcp_004_404_burst(topo, mcp_sensor):
    for i in range(6):
        assert http(topo, SDK_PORTS["json"], body=rpc("tools/list", id_=i),
                    headers=session_headers(uuid.uuid4().hex))[0] == 404
    need_kernel_mcp(mcp_sensor)
    mcp_sensor.wait_alert("GW-MCP-004")


def test_gw_mcp_005_method_before_initialized(topo, mcp_sensor):
    sid = initialize(topo, complete=False)
    http(topo, SDK_PORTS["json"], body=rpc("tools/call", id_=2, name="echo", arguments={"text": "x"}),
         headers=session_headers(sid))
    need_kernel_mcp(mcp_sensor)
    mcp_sensor.wait_alert("GW-MCP-005")


def test_gw_mcp_006_weak_session_id(topo, mcp_sensor):
    assert http(topo, SDK_PORTS["json"], body=rpc("tools/list", id_=2),
                headers=session_headers("aaaa"))[0] == 404
    need_kernel_mcp(mcp_sensor)
    a = mcp_sensor.wait_alert("GW-MCP-006")[0]
    assert "only 4 bytes" in a["message"]


def test_gw_mcp_007_unknown_and_changed_version(topo, mcp_sensor):
    port = SDK_PORTS["json"]
    sid = initialize(topo)
    assert http(topo, port, body=rpc("tools/list", id_=2),
                headers=session_headers(sid, "1999-01-01"))[0] == 400
    mcp_sensor.wait_alert("GW-MCP-007")
    http(topo, port, body=rpc("tools/list", id_=3), headers=session_headers(sid, "2025-06-18"))
    need_kernel_mcp(mcp_sensor)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if any("switched from 2025-11-25 to 2025-06-18" in a["message"] for a in mcp_rules_fired(mcp_sensor)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no version-change alert: {mcp_rules_fired(mcp_sensor)}")


def modern(method, **params):
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                       "io.modelcontextprotocol/clientCapabilities": {}}
    return rpc(method, id_=7, **params)


def test_gw_mcp_008_stateless_header_desync(topo, mcp_sensor):
    port = SDK_PORTS["json"]
    hdr = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}
    http(topo, port, body=modern("tools/call", name="echo", arguments={"text": "x"}), headers=hdr)
    need_kernel_mcp(mcp_sensor)
    a = mcp_sensor.wait_alert("GW-MCP-008")[0]
    assert "body method tools/call" in a["message"]
    # Mcp-Name in base64 form naming another tool than the body.
    other = "=?base64?" + base64.b64encode("délete".encode()).decode() + "?="
    http(topo, port, body=modern("tools/call", name="echo", arguments={"text": "x"}),
         headers={"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": other})
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if any("Mcp-Name differs" in a["message"] for a in mcp_rules_fired(mcp_sensor)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no Mcp-Name alert: {mcp_rules_fired(mcp_sensor)}")


def test_gw_mcp_009_stateless_version_with_get(topo, mcp_sensor):
    status, _, _ = http(topo, SDK_PORTS["json"], method="GET",
                        headers={"MCP-Protocol-Version": "2026-07-28"})
    a = mcp_sensor.wait_alert("GW-MCP-009")[0]
    assert "with GET" in a["message"], a["message"]


def test_gw_mcp_010_011_foreign_origin(topo, mcp_sensor):
    body = rpc("initialize", protocolVersion=INIT_VERSION, capabilities={},
               clientInfo={"name": "browser", "version": "0"})
    origin = {"Origin": "http://rebind.evil.example"}
    # The server that checks Origin refuses: only the attempt is flagged.
    assert http(topo, SDK_PORTS["json"], body=body, headers=origin)[0] == 403
    mcp_sensor.wait_alert("GW-MCP-010")
    assert not [a for a in mcp_rules_fired(mcp_sensor)
                if a["finding_info"]["analytic"]["uid"] == "GW-MCP-011"]
    # The one that does not check answers 200: the higher-severity rule.
    assert http(topo, SDK_PORTS["sse-replies"], body=body, headers=origin)[0] == 200
    a = mcp_sensor.wait_alert("GW-MCP-011")[0]
    assert a["severity"].lower() == "high" and "rebind.evil.example" in a["message"]


def test_gw_mcp_012_protected_endpoint_without_auth(topo, mcp_servers, sensor_factory):
    sensor = sensor_factory(config=MCP_CONFIG + "require_auth = true\n")
    assert http(topo, SDK_PORTS["token"], body=rpc("tools/list", id_=1))[0] == 401
    sensor.wait_alert("GW-MCP-012")
    n = len(mcp_rules_fired(sensor))
    assert http(topo, SDK_PORTS["token"], body=rpc("initialize", protocolVersion=INIT_VERSION,
                                                   capabilities={}, clientInfo={"name": "t", "version": "0"}),
                headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    time.sleep(1.0)
    assert len([a for a in mcp_rules_fired(sensor)
                if a["finding_info"]["analytic"]["uid"] == "GW-MCP-012"]) == n


def test_gw_mcp_013_tools_call_after_401(topo, mcp_sensor):
    call = rpc("tools/call", id_=1, name="echo", arguments={"text": "x"})
    assert http(topo, SDK_PORTS["token"], body=call)[0] == 401
    assert http(topo, SDK_PORTS["token"], body=call)[0] == 401
    need_kernel_mcp(mcp_sensor)
    mcp_sensor.wait_alert("GW-MCP-013")


def test_gw_mcp_014_access_token_in_query(topo, mcp_sensor):
    http(topo, SDK_PORTS["json"], path="/mcp?access_token=" + TOKEN, body=rpc("tools/list", id_=1))
    a = mcp_sensor.wait_alert("GW-MCP-014")[0]
    assert "access_token" in a["message"]
    # The token itself is masked by the kernel once MCP support lands.
    if kernel_reads_mcp(mcp_sensor.events()):
        assert TOKEN not in Path(mcp_sensor.stdout_path).read_text()


def test_gw_mcp_015_tools_call_burst(topo, mcp_servers, sensor_factory):
    sensor = sensor_factory(config=MCP_CONFIG + "tools_call_burst = 3\n")
    sid = initialize(topo)
    for i in range(5):
        assert http(topo, SDK_PORTS["json"], body=rpc("tools/call", id_=10 + i, name="echo",
                                                      arguments={"text": str(i)}),
                    headers=session_headers(sid))[0] == 200
    need_kernel_mcp(sensor)
    sensor.wait_alert("GW-MCP-015")


def test_gw_mcp_016_method_outside_spec(topo, mcp_sensor):
    sid = initialize(topo)
    http(topo, SDK_PORTS["json"], body=rpc("admin/exec", id_=2, cmd="id"), headers=session_headers(sid))
    need_kernel_mcp(mcp_sensor)
    a = mcp_sensor.wait_alert("GW-MCP-016")[0]
    assert "admin/exec" in a["message"]


def test_gw_mcp_017_oversized_body(topo, mcp_servers, sensor_factory):
    sensor = sensor_factory(config=MCP_CONFIG + "max_content_length = 1000\n")
    sid = initialize(topo)
    big = rpc("tools/call", id_=2, name="echo", arguments={"text": "x" * 3000})
    http(topo, SDK_PORTS["json"], body=big, headers=session_headers(sid))
    a = sensor.wait_alert("GW-MCP-017")[0]
    assert "limit 1000" in a["message"]


# --------------------------------------------------------------------------
# Replay: a recorded clean SDK session gives the same MCP events.

def test_replay_of_a_clean_sdk_session(topo, mcp_sensor, tmp_path):
    gwlib.need("tshark")
    port = SDK_PORTS["json"]
    pcap = tmp_path / "mcp.pcapng"
    cap = subprocess.Popen(
        ["ip", "netns", "exec", topo.srv_ns, "tshark", "-q", "-n", "-i", topo.srv_if,
         "-f", f"tcp port {port}", "-w", str(pcap), "-a", "duration:90"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # tshark is capturing once a probe request shows in the file (bounded).
        for i in range(60):
            http(topo, port, method="GET", path=f"/probe/{i}")
            time.sleep(0.2)
            r = gwlib.run(["tshark", "-n", "-r", str(pcap), "-Y", "http.request"], check=False)
            if pcap.exists() and "/probe/" in r.stdout:
                break
        else:
            raise AssertionError("tshark never captured the probe")
        clean_run(topo, mcp_sensor, port, "/mcp", "--mode", "legacy")
        time.sleep(1.0)
    finally:
        cap.send_signal(signal.SIGINT)
        try:
            cap.wait(15)
        except subprocess.TimeoutExpired:
            cap.kill()
            cap.wait(5)
    cfg = tmp_path / "replay.toml"
    cfg.write_text(MCP_CONFIG + f'\n[rules]\ndir = "{gwlib.REPO / "rules"}"\n')
    out = tmp_path / "replay.jsonl"
    r = gwlib.run([gwlib.GATEWATCH_BIN, "replay", "--pcap", str(pcap), "--config", str(cfg),
                   "--output", f"jsonl:{out}"], check=False, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    replayed = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    replayed_events = sorted((e for e in replayed if "class_uid" not in e), key=time_key)

    def shape(events):
        return [(e["http"]["method"], e["http"]["path"], e["http"].get("mcp", {}).get("method"),
                 e.get("mcp_context", {}).get("transport"),
                 e.get("mcp_context", {}).get("session", {}).get("state"))
                for e in events if e.get("kind") == "http_request" and e["http"]["path"] == "/mcp"]

    live = shape(requests_to(mcp_sensor, port))
    again = shape(replayed_events)
    assert again and again == live[-len(again):], f"live {live}\nreplay {again}"
    assert not [a for a in replayed if "class_uid" in a
                and a["finding_info"]["analytic"]["uid"].startswith("GW-MCP")]
    need_kernel_mcp(replayed_events)
    assert rpc_methods([e for e in replayed_events if e.get("kind") == "http_request"]) == \
        ["initialize", "notifications/initialized", "tools/list", "tools/call"]

"""TLS capture: uprobes on the system's libssl. nginx (Debian) serves HTTPS in
the server namespace, curl and CPython's ssl module are the clients in the
client namespace; the sensor (default config: discovery of libssl) must report
the plaintext requests and responses as source "tls" events, with the process
that read or wrote them, and hash credentials exactly as on the packet path."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import gwlib
from gwlib import curl

HERE = Path(__file__).resolve().parent
LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
NGINX_PORT = 8443
PY_TLS_PORT = 8444


def uid() -> str:
    return uuid.uuid4().hex[:12]


def is_tls(path, kind="http_request", direction=None):
    def pred(e):
        return (e.get("source") == "tls" and e.get("kind") == kind
                and e.get("http", {}).get("path") == gwlib.masked(path)
                and (direction is None or e.get("direction") == direction))
    return pred


def is_tls_resp(direction, comm_prefix, port):
    """Responses have no path: matched by direction, process and the client port."""
    def pred(e):
        return (e.get("source") == "tls" and e.get("kind") == "http_response"
                and e.get("direction") == direction
                and (e.get("process") or {}).get("comm", "").startswith(comm_prefix)
                and (e.get("dst") or {}).get("port") == port)
    return pred


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    gwlib.need("openssl")
    d = tmp_path_factory.mktemp("tls-certs")
    r = gwlib.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                   "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=gwt.test",
                   "-days", "1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                  check=False)
    if r.returncode != 0:
        pytest.fail(f"openssl req failed: {r.stderr}")
    return d / "cert.pem", d / "key.pem"


def _stop(proc):
    gwlib.stop_process(proc)


@pytest.fixture(scope="module")
def nginx(topo, certs, tmp_path_factory):
    """Debian's nginx with a temp config, HTTPS on the server address, foreground."""
    gwlib.need("nginx")
    if not os.path.exists(LIBSSL):
        pytest.skip(f"{LIBSSL} not present")
    d = tmp_path_factory.mktemp("nginx")
    cert, key = certs
    conf = d / "nginx.conf"
    temps = "\n".join(f"  {k}_temp_path {d / k};" for k in
                      ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log;
{temps}
  server {{
    listen {topo.srv4}:{NGINX_PORT} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
  }}
}}
""")
    proc = subprocess.Popen(["ip", "netns", "exec", topo.srv_ns, "nginx", "-c", str(conf),
                             "-p", str(d), "-e", str(d / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = topo.in_cli("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                            f"https://{topo.srv4}:{NGINX_PORT}/ready", check=False)
            if r.stdout == "200":
                break
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.1)
        else:
            pytest.fail("nginx did not answer within 10 s")
        yield f"https://{topo.srv4}:{NGINX_PORT}"
    finally:
        _stop(proc)


@pytest.fixture
def py_tls_server(topo, certs):
    """tls_pair.py server (CPython ssl: SSL_read_ex/SSL_write_ex) in the server namespace."""
    cert, key = certs
    proc = subprocess.Popen(["ip", "netns", "exec", topo.srv_ns, sys.executable,
                             str(HERE / "tls_pair.py"), "server", "--cert", str(cert),
                             "--key", str(key), "--listen", f"{topo.srv4}:{PY_TLS_PORT}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else b""
        if not line.startswith(b"ready"):
            _stop(proc)
            pytest.fail(f"tls_pair.py server did not start: {line!r}")
        yield proc
    finally:
        _stop(proc)


def py_client(topo, path, *extra, timeout=20):
    return topo.in_cli(sys.executable, str(HERE / "tls_pair.py"), "client", "--connect",
                       f"{topo.srv4}:{PY_TLS_PORT}", "--path", path, *extra, timeout=timeout,
                       check=False)


def assert_no_leak(sensor, secret):
    for name, text in (("stdout", sensor.stdout_path.read_text(errors="replace")),
                       ("jsonl", sensor.jsonl_path.read_text(errors="replace")
                        if sensor.jsonl_path.exists() else ""),
                       ("log", sensor.stderr())):
        assert secret not in text, f"raw token in the sensor's {name}"


def one(sensor, pred, what):
    evs = sensor.wait_for(pred, timeout=8, settle=0.3)
    assert len(evs) == 1, f"expected one {what}, got {len(evs)}: {json.dumps(evs)[:2000]}"
    return evs[0]


# ---------------------------------------------------------------------------


def test_sensor_attaches_to_libssl_and_says_what_is_not_covered(sensor):
    log = sensor.stderr()
    assert "TLS capture: attached" in log, log
    assert "libssl.so" in log
    assert "statically linked" in log


def test_nginx_and_curl_over_https(topo, httpd, nginx, sensor):
    tag = uid()
    path = f"/tls/{tag}?q=1"
    token = secrets.token_urlsafe(24)
    rid = f"rid-{tag}"
    code, cli_ip, cli_port, _ = curl(topo, nginx + path, "-k", "--http1.1",
                                     "-H", f"Authorization: Bearer {token}",
                                     "-H", f"X-Request-Id: {rid}", "-A", f"gwt-tls/{tag}")
    assert code == 200

    # nginx read it (SSL_read: ingress), curl wrote it (SSL_write: egress).
    srv = one(sensor, is_tls(path, direction="ingress"), "nginx request event")
    cli = one(sensor, is_tls(path, direction="egress"), "curl request event")
    assert srv["process"]["comm"] == "nginx"
    assert cli["process"]["comm"] == "curl"
    for ev in (srv, cli):
        h = ev["http"]
        assert ev["kind"] == "http_request"
        assert h["method"] == "GET"
        assert h["version"] == "HTTP/1.1"
        assert h["headers"]["x-request-id"] == rid
        assert h["headers"]["user-agent"] == f"gwt-tls/{tag}"
        assert h["headers"]["host"] == f"{topo.srv4}:{NGINX_PORT}"
        c = h["credentials"]["authorization"]
        assert c["scheme"] == "bearer"
        assert c["length"] == len("Bearer ") + len(token)
        assert ev["process"]["pid"] > 0 and ev["process"]["cgroup_id"] > 0
        assert "iface" not in ev
        # Endpoints from the socket the SSL call used.
        assert ev["src"] == {"ip": cli_ip, "port": cli_port}
        assert ev["dst"] == {"ip": topo.srv4, "port": NGINX_PORT}
    assert srv["http"]["credentials"]["authorization"]["hash"] == \
        cli["http"]["credentials"]["authorization"]["hash"]

    # Responses: nginx wrote (egress), curl read (ingress).
    r_srv = one(sensor, is_tls_resp("egress", "nginx", cli_port), "nginx response event")
    r_cli = one(sensor, is_tls_resp("ingress", "curl", cli_port), "curl response event")
    for r in (r_srv, r_cli):
        assert r["http"]["status"] == 200
        assert r["http"]["headers"]["content-type"] == "application/json"
        assert r["src"] == {"ip": topo.srv4, "port": NGINX_PORT}
        assert r["dst"] == {"ip": cli_ip, "port": cli_port}

    # The same token in plaintext through the packet path: the same hash.
    ppath = f"/plain/{tag}"
    code, _, _, _ = curl(topo, f"http://{topo.srv4}:8080{ppath}",
                         "-H", f"Authorization: Bearer {token}")
    assert code == 200
    plain = one(sensor, lambda e: e.get("source") == "net" and e.get("kind") == "http_request"
                and e["http"].get("path") == ppath, "plaintext request event")
    assert plain["http"]["credentials"]["authorization"]["hash"] == \
        srv["http"]["credentials"]["authorization"]["hash"]
    # TLS records on the veth are not HTTP: the packet path saw no request there.
    assert not [e for e in sensor.events() if e.get("source") == "net"
                and e.get("http", {}).get("path") == gwlib.masked(path)]
    assert_no_leak(sensor, token)


def test_python_ssl_client_and_server(topo, certs, py_tls_server, sensor):
    tag = uid()
    path = f"/py/{tag}"
    token = secrets.token_hex(20)
    r = py_client(topo, path, "--token", token, "--header", f"X-Request-Id: py-{tag}",
                  "--split", "23", "--count", "2")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    for n in range(2):
        p = f"{path}/{n}"
        srv = one(sensor, is_tls(p, direction="ingress"), "python server request")
        cli = one(sensor, is_tls(p, direction="egress"), "python client request")
        assert srv["process"]["pid"] == py_tls_server.pid  # `ip netns exec` execs python
        for ev in (srv, cli):
            assert ev["process"]["comm"].startswith("python"), ev["process"]
            assert ev["http"]["headers"]["x-request-id"] == f"py-{tag}"
            assert ev["http"]["credentials"]["authorization"]["scheme"] == "bearer"
            assert ev["dst"]["port"] == PY_TLS_PORT
        # The client wrote the header block in 23-byte SSL_write_ex calls: joined.
        assert cli["http"]["segments"] > 1
        assert not cli["http"]["anomalies"], cli["http"]["anomalies"]
        assert srv["http"]["credentials"] == cli["http"]["credentials"]
    assert_no_leak(sensor, token)


def test_a_process_killed_inside_ssl_read_leaves_the_sensor_running(topo, nginx,
                                                                    py_tls_server, sensor):
    # A client blocked in SSL_read: it sends half a header block, which the server
    # waits on forever; both processes are then killed with probes attached.
    code = ("import socket,ssl,sys;c=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT);"
            "c.check_hostname=False;c.verify_mode=ssl.CERT_NONE;"
            f"s=c.wrap_socket(socket.create_connection(('{topo.srv4}',{PY_TLS_PORT})));"
            "s.sendall(b'GET /hang HTTP/1.1\\r\\nHost: x\\r\\n');print('sent',flush=True);s.recv(10)")
    proc = subprocess.Popen(["ip", "netns", "exec", topo.cli_ns, sys.executable, "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().startswith(b"sent")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    py_tls_server.send_signal(signal.SIGKILL)
    py_tls_server.wait(5)
    time.sleep(0.3)
    assert sensor.running, sensor.stderr()
    # Processes started afterwards are still covered.
    tag = uid()
    code_, _, _, _ = curl(topo, f"{nginx}/after/{tag}", "-k")
    assert code_ == 200
    one(sensor, is_tls(f"/after/{tag}", direction="egress"), "request after the kill")
    assert "panicked" not in sensor.stderr()


def test_a_configured_library_that_does_not_exist_is_logged_not_fatal(topo, nginx, sensor_factory):
    s = sensor_factory(config=f'[tls]\nlibraries = ["/nonexistent/libssl.so.3", "{LIBSSL}"]\n')
    log = s.stderr()
    assert "/nonexistent/libssl.so.3" in log and "does not exist" in log, log
    assert "TLS capture: attached" in log and LIBSSL in log, log
    tag = uid()
    code, _, _, _ = curl(topo, f"{nginx}/cfg/{tag}", "-k")
    assert code == 200
    one(s, is_tls(f"/cfg/{tag}", direction="ingress"), "request with configured library")


def test_no_library_at_all_is_logged_and_the_sensor_runs(topo, httpd, sensor_factory):
    s = sensor_factory(config='[tls]\nlibraries = ["/nonexistent/libssl.so.3"]\n')
    assert "does not exist" in s.stderr()
    tag = uid()
    code, _, _, _ = curl(topo, f"http://{topo.srv4}:8080/still/{tag}")
    assert code == 200
    one(s, lambda e: e.get("source") == "net" and e.get("http", {}).get("path") == f"/still/{tag}",
        "plaintext request")


def test_tls_disabled(topo, httpd, nginx, sensor_factory):
    s = sensor_factory(config="[tls]\nenabled = false\n")
    assert "TLS capture disabled" in s.stderr()
    tag = uid()
    code, _, _, _ = curl(topo, f"{nginx}/off/{tag}", "-k")
    assert code == 200
    time.sleep(0.5)
    assert not [e for e in s.events() if e.get("source") == "tls"
                and e.get("http", {}).get("path") == f"/off/{tag}"]

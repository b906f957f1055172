"""Helpers for the gatewatch end-to-end tests: namespaces, the sensor process,
raw-socket clients inside a namespace, event waiting, and a pcap writer."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GATEWATCH_BIN = os.environ.get("GATEWATCH_BIN", str(REPO / "target" / "debug" / "gatewatch"))
EVENT_SCHEMA = REPO / "schemas" / "event.schema.json"

CLI4, SRV4 = "10.231.0.1", "10.231.0.2"
CLI6, SRV6 = "fd00:231::1", "fd00:231::2"
HTTP_PORTS = (8080, 18443)

# Names are unique per test session (the pid), so parallel runs never clash;
# a leftover from a crashed session is recognised by its dead pid.
NS_PREFIX_CLI = "gwt-cli-"
NS_PREFIX_SRV = "gwt-srv-"
_STALE_RE = re.compile(r"^gwt-(?:cli|srv)-(\d+)$")


def run(cmd, *, check=True, timeout=30, **kw):
    """subprocess.run with text output captured and a bound on time."""
    return subprocess.run(
        cmd, check=check, timeout=timeout, capture_output=True, text=True, **kw
    )


def stop_process(proc: subprocess.Popen, timeout: float = 5):
    """Terminate a helper process, then kill it if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces():
    """Delete gwt-* namespaces left by a session whose process is gone."""
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _STALE_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            run(["ip", "netns", "del", name], check=False)


@dataclass
class Topology:
    suffix: str
    cli_ns: str = ""
    srv_ns: str = ""
    cli_if: str = ""
    srv_if: str = ""
    cli4: str = CLI4
    srv4: str = SRV4
    cli6: str = CLI6
    srv6: str = SRV6

    def __post_init__(self):
        self.cli_ns = NS_PREFIX_CLI + self.suffix
        self.srv_ns = NS_PREFIX_SRV + self.suffix
        # IFNAMSIZ is 16: "gwt" + pid (<= 7 digits) + "c"/"s".
        self.cli_if = f"gwt{self.suffix}c"
        self.srv_if = f"gwt{self.suffix}s"

    def create(self):
        self.destroy()
        cmds = [
            ["ip", "netns", "add", self.cli_ns],
            ["ip", "netns", "add", self.srv_ns],
            ["ip", "link", "add", self.cli_if, "netns", self.cli_ns,
             "type", "veth", "peer", "name", self.srv_if, "netns", self.srv_ns],
            ["ip", "-n", self.cli_ns, "addr", "add", f"{self.cli4}/24", "dev", self.cli_if],
            ["ip", "-n", self.srv_ns, "addr", "add", f"{self.srv4}/24", "dev", self.srv_if],
            ["ip", "-n", self.cli_ns, "addr", "add", f"{self.cli6}/64", "dev", self.cli_if, "nodad"],
            ["ip", "-n", self.srv_ns, "addr", "add", f"{self.srv6}/64", "dev", self.srv_if, "nodad"],
            ["ip", "-n", self.cli_ns, "link", "set", "lo", "up"],
            ["ip", "-n", self.srv_ns, "link", "set", "lo", "up"],
            ["ip", "-n", self.cli_ns, "link", "set", self.cli_if, "up"],
            ["ip", "-n", self.srv_ns, "link", "set", self.srv_if, "up"],
        ]
        for c in cmds:
            r = run(c, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(c)} failed: {r.stderr.strip()}")
        # Wait (bounded) for both ends to be up and routable.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = run(["ip", "netns", "exec", self.cli_ns, "ping", "-c1", "-W1", self.srv4],
                    check=False) if _have("ping") else None
            if r is None or r.returncode == 0:
                break
            time.sleep(0.1)

    def destroy(self):
        for ns in (self.cli_ns, self.srv_ns):
            run(["ip", "netns", "del", ns], check=False)

    def in_cli(self, *cmd, **kw):
        return run(["ip", "netns", "exec", self.cli_ns, *cmd], **kw)

    def in_srv(self, *cmd, **kw):
        return run(["ip", "netns", "exec", self.srv_ns, *cmd], **kw)


def need(*tools: str):
    """Skip the calling test when a tool it drives is not installed."""
    import pytest
    from shutil import which
    missing = [t for t in tools if which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run integration-tests/setup.sh")


def _have(cmd: str) -> bool:
    from shutil import which
    return which(cmd) is not None


# --------------------------------------------------------------------------
# Sockets inside a namespace (setns in a throw-away thread: a socket keeps the
# network namespace it was created in).

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def netns_socket(ns: str, family=socket.AF_INET, type_=socket.SOCK_STREAM) -> socket.socket:
    result: dict = {}

    def worker():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.socket(family, type_)
        except BaseException as e:  # handed to the caller
            result["err"] = e

    t = threading.Thread(target=worker, name=f"setns-{ns}")
    t.start()
    t.join(10)
    if "err" in result:
        raise result["err"]
    return result["sock"]


@dataclass
class RawResult:
    local_port: int
    response: bytes


def raw_http(topo: Topology, chunks, *, host=None, port=8080, nodelay=False,
             pause=0.0, timeout=3.0, half_close=True) -> RawResult:
    """Connect from the client namespace, send each chunk with one sendall (with
    `pause` seconds between chunks), half-close, and read the reply until EOF
    or `timeout` (bounded)."""
    host = host or topo.srv4
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = netns_socket(topo.cli_ns, family)
    try:
        s.settimeout(timeout)
        if nodelay:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect((host, port))
        local_port = s.getsockname()[1]
        for i, chunk in enumerate(chunks):
            if i and pause:
                time.sleep(pause)
            s.sendall(chunk)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not b:
                break
            data += b
        return RawResult(local_port, data)
    finally:
        s.close()


# --------------------------------------------------------------------------
# The sensor process.

class SensorError(AssertionError):
    pass


@dataclass
class Sensor:
    topo: Topology
    workdir: Path
    config: Path | None = None
    # Extra --output SPECs (e.g. kafka:127.0.0.1:PORT/TOPIC) besides stdout and jsonl.
    outputs: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    stdout_path: Path = field(init=False)
    jsonl_path: Path = field(init=False)
    stderr_path: Path = field(init=False)

    def __post_init__(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.workdir / "stdout.jsonl"
        self.jsonl_path = self.workdir / "events.jsonl"
        self.stderr_path = self.workdir / "sensor.stderr"

    def command(self):
        cmd = ["ip", "netns", "exec", self.topo.srv_ns, GATEWATCH_BIN, "run"]
        if self.config:
            cmd += ["--config", str(self.config)]
        cmd += ["--iface", self.topo.srv_if, "--output", "stdout",
                "--output", f"jsonl:{self.jsonl_path}"]
        for spec in self.outputs:
            cmd += ["--output", spec]
        return cmd

    def start(self, timeout=20.0):
        if not os.access(GATEWATCH_BIN, os.X_OK):
            raise SensorError(f"gatewatch binary not found at {GATEWATCH_BIN} "
                              "(build with `cargo build` or set GATEWATCH_BIN)")
        env = dict(os.environ, NO_COLOR="1")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # `ip netns exec` execs the binary: the pid is gatewatch's own.
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "gatewatch running" in self.stderr():
                return self
            if self.proc.poll() is not None:
                raise SensorError(f"gatewatch exited with {self.proc.returncode} before "
                                  f"attaching:\n{self.stderr()}")
            time.sleep(0.05)
        self.kill()
        raise SensorError(f"gatewatch did not report 'gatewatch running' in {timeout}s:\n"
                          f"{self.stderr()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise SensorError(f"gatewatch did not exit within {timeout}s of "
                                  f"{signal.Signals(sig).name}:\n{self.stderr()}")
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_lines(self) -> list[str]:
        """Complete lines written so far (a trailing partial line is left out)."""
        try:
            data = self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        lines = data.split("\n")
        return [ln for ln in lines[:-1] if ln.strip()]

    def records(self) -> list[dict]:
        """Every JSON line: events and alerts (alerts are OCSF findings, with class_uid)."""
        return [json.loads(ln) for ln in self.stdout_lines()]

    def events(self) -> list[dict]:
        return [r for r in self.records() if "class_uid" not in r]

    def alerts(self) -> list[dict]:
        return [r for r in self.records() if "class_uid" in r]

    def alerts_of(self, rule=None) -> list[dict]:
        """Alerts of one rule id (all alerts when None)."""
        return [a for a in self.alerts() if rule is None or a["finding_info"]["analytic"]["uid"] == rule]

    def wait_alert(self, rule, timeout=8.0, pred=lambda a: True) -> list[dict]:
        """Alerts of `rule` that match `pred`, once there is one (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [a for a in self.alerts_of(rule) if pred(a)]
            if found:
                return found
            time.sleep(0.1)
        got = sorted({a["finding_info"]["analytic"]["uid"] for a in self.alerts()})
        raise SensorError(f"no {rule} alert within {timeout}s; alerts seen: {got}\n"
                          f"events: {json.dumps(self.events())[-3000:]}\n{self.stderr()[-2000:]}")

    def wait_for(self, pred, count=1, timeout=8.0, settle=0.0) -> list[dict]:
        """Events matching `pred`, once at least `count` are there (bounded wait);
        `settle` extra seconds are waited afterwards to catch extra ones."""
        deadline = time.monotonic() + timeout
        found: list[dict] = []
        while time.monotonic() < deadline:
            found = [e for e in self.events() if pred(e)]
            if len(found) >= count:
                if settle:
                    time.sleep(settle)
                    found = [e for e in self.events() if pred(e)]
                return found
            if not self.running:
                break
            time.sleep(0.05)
        raise SensorError(
            f"expected {count} matching event(s) within {timeout}s, got {len(found)}.\n"
            f"matching: {json.dumps(found)[:3000]}\n"
            f"all events ({len(self.events())}): "
            f"{json.dumps(self.events())[-4000:]}\nstderr:\n{self.stderr()[-3000:]}")


def masked(path, clear=()):
    """A request target as the kernel exports it: every query value's bytes
    replaced by '*' (its length kept) unless its name, lower-cased, is in
    `clear` (capture.query_clear). Names and delimiters stay."""
    if "?" not in path:
        return path
    head, _, query = path.partition("?")
    out, name, in_value, keep = [head, "?"], "", False, False
    for ch in query:
        if ch in "&;#":
            out.append(ch)
            name, in_value, keep = "", False, False
            if ch == "#":
                out.append(query[query.index("#") + 1:])
                break
            continue
        if in_value:
            out.append(ch if keep else "*" * len(ch.encode()))
            continue
        if ch == "=":
            in_value, keep = True, name.lower() in clear
        else:
            name += ch
        out.append(ch)
    return "".join(out)


def is_req(path=None):
    """Request events for `path` as sent (compared with its masked form)."""
    want = None if path is None else masked(path)

    def pred(e):
        return e.get("kind") == "http_request" and (
            want is None or e.get("http", {}).get("path") == want)
    return pred


def is_resp(client_port, server_port=None):
    def pred(e):
        return (e.get("kind") == "http_response"
                and e.get("dst", {}).get("port") == client_port
                and (server_port is None or e.get("src", {}).get("port") == server_port))
    return pred


# --------------------------------------------------------------------------
# Hand-written pcap files.

LINKTYPE_ETHERNET = 1


def pcap_bytes(frames, linktype=LINKTYPE_ETHERNET, snaplen=262144) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    t = 1_700_000_000
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", t + i // 1000, (i % 1000) * 1000, len(f), len(f)))
        out.append(f)
    return b"".join(out)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(payload: bytes, ethertype=0x0800) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ethertype) + payload


def ipv4(payload: bytes, src="10.1.0.1", dst="10.1.0.2", proto=6, flags_frag=0x4000,
         ident=1, total_len=None) -> bytes:
    tl = total_len if total_len is not None else 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tl & 0xFFFF, ident, flags_frag, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def tcp(payload: bytes, sport=40000, dport=8080, seq=1000, ack=1, flags=0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def tcp4_frame(payload: bytes, sport=40000, dport=8080, seq=1000, src="10.1.0.1", dst="10.1.0.2") -> bytes:
    return eth(ipv4(tcp(payload, sport, dport, seq), src, dst))


def curl(topo: Topology, url: str, *args: str, timeout: float = 10.0):
    """curl from the client namespace; returns (http_code, local_ip, local_port, body)."""
    marker = "\n@@GWT@@"
    r = topo.in_cli("curl", "-sS", "--max-time", "5", "-o", "-", "-w",
                    marker + "%{http_code} %{local_ip} %{local_port}", *args, url,
                    check=False, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"curl {url} failed ({r.returncode}): {r.stderr}")
    body, _, tail = r.stdout.rpartition(marker)
    code, ip, port = tail.split()
    return int(code), ip, int(port), body

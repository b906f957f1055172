"""The Kafka test broker (tansu, memory storage) inside the server namespace,
and a consumer run beside it: the sensor, the broker and the consumer all
talk over that namespace's loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gwlib

HERE = Path(__file__).resolve().parent
TOOLS = Path(os.environ.get("GW_TOOLS_DIR", Path.home() / ".cache" / "gatewatch-tools"))
TANSU = Path(os.environ.get("TANSU_BIN", TOOLS / "bin" / "tansu"))
PYTHON = HERE / ".venv" / "bin" / "python"

TEST_RULE = """let rule = #{ id: "GW-TEST-KAFKA", title: "Request id seen", severity: "low",
    description: "Fires on every request that carries X-Request-Id (Kafka delivery tests).",
    kinds: ["http_request"], mitre: [], throttle: false };
let rid = ev.http.headers["x-request-id"];
if rid != () { #{ summary: `request ${rid}`, request_id: rid } }
"""


def write_test_rules(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "GW-TEST-KAFKA.rhai").write_text(TEST_RULE)
    return path


class Tansu:
    def __init__(self, topo: gwlib.Topology, workdir: Path, port: int = 19092):
        self.topo, self.workdir, self.port = topo, workdir, port
        self.url = f"tcp://127.0.0.1:{port}"
        self.bootstrap = f"127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, topics=(), partitions=3, timeout=30.0):
        self.starts += 1
        log = open(self.workdir / f"tansu-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.srv_ns, str(TANSU), "broker",
             "--listener-url", self.url, "--advertised-listener-url", self.url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        for t in topics:
            self.create_topic(t, partitions, timeout)
        return self

    def create_topic(self, name, partitions=3, timeout=30.0):
        """Creates a topic, retrying while the broker is still starting (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.topo.in_srv(str(TANSU), "topic", "create", name, "--broker", self.url,
                                 "--partitions", str(partitions), check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise RuntimeError(f"tansu topic create {name}: {r.stdout}{r.stderr}")
            time.sleep(0.3)

    def kill(self):
        """Ends the broker at once (memory storage: everything on it is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def consumer(topo, bootstrap, topic, out: Path, **opts) -> subprocess.Popen:
    """Starts kafka_consume.py in the server namespace (see its doc for opts)."""
    args = []
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    return subprocess.Popen(
        ["ip", "netns", "exec", topo.srv_ns, str(PYTHON), str(HERE / "kafka_consume.py"),
         bootstrap, topic, str(out), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def read_messages(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def consume(topo, bootstrap, topic, out: Path, count: int, timeout=60.0) -> list[dict]:
    """Reads until `count` distinct alerts arrived or 5 s of quiet (bounded)."""
    p = consumer(topo, bootstrap, topic, out, count=count, idle=5, max=timeout)
    try:
        p.wait(timeout + 15)
    finally:
        gwlib.stop_process(p)
    return read_messages(out)

"""Fixtures for the gatewatch end-to-end tests.

Topology (one per test session, names unique to the session's pid):

    gwt-cli-<pid> [gwt<pid>c 10.231.0.1/24 fd00:231::1/64]
        <== veth ==>
    gwt-srv-<pid> [gwt<pid>s 10.231.0.2/24 fd00:231::2/64]
        httpd.py on 8080 and 18443, IPv4 and IPv6
        gatewatch run --iface gwt<pid>s (per test)

Everything needs root (namespaces, eBPF): without it every test is skipped.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gwlib
from gwlib import Sensor, Topology

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    reason = None
    if os.geteuid() != 0:
        reason = "gatewatch integration tests need root (network namespaces, eBPF); run as root"
    elif shutil.which("ip") is None:
        reason = "iproute2 (`ip`) is not installed; run integration-tests/setup.sh"
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def topo():
    gwlib.need("curl")
    gwlib.remove_stale_namespaces()
    t = Topology(suffix=str(os.getpid()))
    try:
        t.create()
        yield t
    finally:
        t.destroy()


@pytest.fixture(scope="session")
def httpd(topo):
    """The HTTP server in the server namespace (all methods → 200 + JSON)."""
    specs = []
    for port in gwlib.HTTP_PORTS:
        specs += [f"{topo.srv4}:{port}", f"[{topo.srv6}]:{port}"]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", topo.srv_ns, sys.executable, str(HERE / "httpd.py"), *specs],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            proc.kill()
            err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            pytest.fail(f"test HTTP server did not start: {line!r} {err}")
        yield specs
    finally:
        gwlib.stop_process(proc)


@pytest.fixture
def sensor_factory(topo, tmp_path):
    """Start sensors on the server veth; stops any still running at teardown and
    checks each one exited 0 and wrote only valid JSON lines."""
    started: list[Sensor] = []

    def make(name="sensor", config: str | None = None, start=True, outputs=()) -> Sensor:
        wd = tmp_path / name
        wd.mkdir(parents=True, exist_ok=True)
        # Every sensor keeps its files (audit trail, spool) in its own directory
        # and runs the repository's rule pack, never the machine's.
        text = config or ""
        if "[sensor]" not in text:
            text = f'[sensor]\nstate_dir = "{wd / "state"}"\n' + text
        if "[rules]" not in text:
            text += f'\n[rules]\ndir = "{gwlib.REPO / "rules"}"\n'
        cfg = wd / "gatewatch.toml"
        cfg.write_text(text)
        s = Sensor(topo, wd, config=cfg, outputs=tuple(outputs))
        started.append(s)
        if start:
            s.start()
        return s

    yield make

    problems = []
    for s in started:
        try:
            rc = s.stop(signal.SIGTERM)
        except gwlib.SensorError as e:
            problems.append(str(e))
            continue
        finally:
            s.kill()
        if s.proc is not None and rc != 0:
            problems.append(f"gatewatch exited with {rc}, not 0:\n{s.stderr()[-3000:]}")
        for path in (s.stdout_path, s.jsonl_path):
            if not path.exists():
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                try:
                    json.loads(line)
                except ValueError as e:
                    problems.append(f"{path.name}:{n}: not JSON ({e}): {line[:200]!r}")
    if problems:
        pytest.fail("sensor teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def sensor(httpd, sensor_factory) -> Sensor:
    """One running sensor on the server veth, with the HTTP server up."""
    return sensor_factory()

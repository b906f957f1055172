"""The CPU budget (capture.cpu_budget_percent) under real load: wrk against the
test server, a sensor with a budget far below what inspecting everything
costs. What an operator must see: sampling starts and says so (sensor_stats,
GW-SENSOR-002, a warning in the log), whole connections are inspected or
skipped (never half of one), and full inspection comes back once the load
stops. Load is bounded: wrk runs for a fixed few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

import gwlib



def stats(sensor):
    return [e["stats"] for e in sensor.events() if e["kind"] == "sensor_stats"]


def wrk(topo, seconds=4, connections=24):
    exe = shutil.which("wrk")
    if not exe:
        pytest.fail("wrk is not installed; run integration-tests/setup.sh")
    return subprocess.run(
        ["ip", "netns", "exec", topo.cli_ns, "timeout", str(seconds + 10), exe, "-t1",
         f"-c{connections}", f"-d{seconds}s", f"http://{topo.srv4}:8080/budget/load"],
        capture_output=True, text=True, timeout=seconds + 15)


def test_over_budget_the_sensor_samples_whole_connections_says_so_and_recovers(
        topo, httpd, sensor_factory, tmp_path):
    s = sensor_factory("budget", config=f'[sensor]\nstate_dir = "{tmp_path}/state"\n'
                       "stats_interval_secs = 1\n[capture]\ncpu_budget_percent = 1\n")
    run = wrk(topo)
    assert run.returncode == 0, run.stderr

    sampled = [st for st in stats(s) if st.get("shed_packets", 0) > 0]
    assert sampled, f"no sensor_stats with shed packets: {stats(s)}\n{s.stderr()[-2000:]}"
    assert min(st["inspected_percent"] for st in sampled) < 100
    assert "CPU budget spent" in s.stderr()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not [
            a for a in s.alerts() if a["finding_info"]["analytic"]["uid"] == "GW-SENSOR-002"]:
        time.sleep(0.2)
    raised = [a for a in s.alerts() if a["finding_info"]["analytic"]["uid"] == "GW-SENSOR-002"]
    assert raised, f"no GW-SENSOR-002 alert: {[a['finding_info']['analytic']['uid'] for a in s.alerts()]}"

    # Whole connections or nothing: every inspected request's connection has its
    # response inspected too (the decision is one hash of both endpoints).
    reqs = {e["src"]["port"] for e in s.events()
            if e["kind"] == "http_request" and e["http"].get("path") == "/budget/load"}
    resps = {e["dst"]["port"] for e in s.events() if e["kind"] == "http_response"}
    assert reqs, "some connections must still be inspected"
    assert reqs <= resps, f"requests without their responses on ports {sorted(reqs - resps)}"

    # Load gone: full inspection returns within a few seconds, and a new
    # connection is seen again.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        latest = stats(s)[-1:]
        if latest and latest[0].get("inspected_percent") == 100 and latest[0].get("shed_packets") == 0:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"inspection did not return to 100%: {stats(s)[-3:]}")
    path = f"/budget/after/{time.time_ns()}"
    gwlib.curl(topo, f"http://{topo.srv4}:8080{path}")
    s.wait_for(lambda e: e["kind"] == "http_request" and e["http"].get("path") == path)

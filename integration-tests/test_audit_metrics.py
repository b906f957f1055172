"""Operability on a live sensor: the metrics endpoint moves with real traffic and
parses as Prometheus text; the audit trail of a real run verifies, and an edit
to it is caught."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

import gwlib


def scrape(topo, path="/metrics"):
    r = topo.in_srv("curl", "-s", "-w", "\n%{http_code}", f"http://127.0.0.1:9464{path}", check=False)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def samples(text):
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(m, name, **labels):
    return sum(v for (n, ls), v in m.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


def test_metrics_move_with_real_traffic_and_parse(sensor, topo):
    pytest.importorskip("prometheus_client")
    code, body = scrape(topo)
    assert code == 200, body
    before = samples(body)
    for i in range(20):
        gwlib.curl(topo, f"http://{topo.srv4}:8080/metrics-check/{i}")
    gwlib.curl(topo, f"http://{topo.srv4}:8080/admin/x")
    time.sleep(1.5)
    code, body = scrape(topo)
    after = samples(body)
    assert total(after, "gatewatch_packets_seen_total") > total(before, "gatewatch_packets_seen_total")
    assert total(after, "gatewatch_events_total", kind="http_request") >= \
        total(before, "gatewatch_events_total", kind="http_request") + 20
    assert total(after, "gatewatch_alerts_total") >= 1
    assert total(after, "gatewatch_sink_sent_total") > total(before, "gatewatch_sink_sent_total")
    code, body = scrape(topo, "/healthz")
    assert code == 200 and body.strip() == "ok", body


def test_audit_trail_of_a_real_run_verifies_and_catches_an_edit(httpd, sensor_factory, topo, tmp_path):
    s = sensor_factory("audit")
    for i in range(3):
        gwlib.curl(topo, f"http://{topo.srv4}:8080/admin/audit-{i}")
    deadline = time.time() + 8
    while len(s.alerts()) < 3 and time.time() < deadline:
        time.sleep(0.1)
    assert s.stop() == 0
    trail = s.workdir / "state" / "audit" / "audit.jsonl"
    lines = trail.read_text().splitlines()
    assert len(lines) >= 3
    assert all("admin/audit" not in l or json.loads(l)["kind"] == "alert" for l in lines)
    ok = subprocess.run([gwlib.GATEWATCH_BIN, "audit", "verify", str(trail)], capture_output=True, text=True)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stdout + ok.stderr
    # One byte changed in the middle record: caught, with its line.
    mid = len(lines) // 2
    edited = list(lines)
    edited[mid] = edited[mid].replace("audit-", "audiT-", 1) if "audit-" in edited[mid] else edited[mid].replace('"', "'", 1)
    bad = tmp_path / "edited.jsonl"
    bad.write_text("\n".join(edited) + "\n")
    r = subprocess.run([gwlib.GATEWATCH_BIN, "audit", "verify", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f":{mid + 1}:" in r.stdout + r.stderr, r.stdout + r.stderr

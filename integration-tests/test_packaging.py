"""The .deb and .rpm: what they install, the service's least privilege, removal.

Needs the packages built first (`packaging/build-packages.sh`; run-all.sh does it
and sets GATEWATCH_REQUIRE_PACKAGES=1 so a missing package fails instead of
skipping). Installs the .deb on this machine and purges it at the end.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import gwlib

ROOT = Path(__file__).resolve().parent.parent
UNIT = "/lib/systemd/system/gatewatch.service"


def _one(pattern: str) -> Path | None:
    found = sorted(glob.glob(str(ROOT / pattern)))
    return Path(found[-1]) if found else None


def _need_package(pattern: str) -> Path:
    p = _one(pattern)
    if p is None:
        msg = f"no {pattern}: run packaging/build-packages.sh"
        if os.environ.get("GATEWATCH_REQUIRE_PACKAGES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def sh(*cmd, check=True, timeout=120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def deb():
    pkg = _need_package("target/debian/gatewatch_*.deb")
    sh("dpkg", "--purge", "gatewatch", check=False)
    sh("dpkg", "-i", str(pkg))
    yield pkg
    sh("dpkg", "--purge", "gatewatch", check=False)


def test_deb_puts_files_where_listed(deb):
    print(f"\n{deb.name}: {deb.stat().st_size / 1e6:.1f} MB")
    for path in ["/usr/bin/gatewatch", "/etc/gatewatch/gatewatch.toml", UNIT,
                 "/usr/share/gatewatch/schemas/event.schema.json",
                 "/usr/share/doc/gatewatch/SECURITY.md", "/var/lib/gatewatch", "/etc/gatewatch/rules.d",
                 "/usr/share/gatewatch/rules/mcp/GW-MCP-001-request-without-session-id.rhai"]:
        assert os.path.exists(path), path
    assert "/etc/gatewatch/gatewatch.toml" in sh("dpkg-query", "--control-show", "gatewatch", "conffiles").stdout
    assert sh("id", "-u", "gatewatch").stdout.strip().isdigit()
    st = os.stat("/var/lib/gatewatch")
    assert st.st_uid == int(sh("id", "-u", "gatewatch").stdout)
    assert oct(st.st_mode & 0o777) == "0o750"


def test_installed_binary_version_and_config_check(deb, tmp_path):
    v = sh("/usr/bin/gatewatch", "--version").stdout.strip()
    assert re.fullmatch(r"gatewatch \d+\.\d+\.\d+ \(([0-9a-f]{7,}|unknown)\)", v), v
    ok = sh("/usr/bin/gatewatch", "run", "--config", "/etc/gatewatch/gatewatch.toml", "--check-config")
    assert "config ok" in ok.stdout
    # The installed pack is complete: every rule in the repository, compiling and passing its fixtures.
    repo_rules = len(list((ROOT / "rules").rglob("*.rhai")))
    assert f"; {repo_rules} rules" in ok.stdout, ok.stdout
    sh("/usr/bin/gatewatch", "rules", "test", "/usr/share/gatewatch/rules")
    bad = tmp_path / "bad.toml"
    bad.write_text("[capture]\nparse_windw = 4096\n")
    r = sh("/usr/bin/gatewatch", "run", "--config", str(bad), "--check-config", check=False)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "parse_windw" in err[0], r.stderr
    r = sh("/usr/bin/gatewatch", "run", "--config", str(tmp_path / "missing.toml"), "--check-config", check=False)
    assert r.returncode != 0 and "missing.toml" in r.stderr


def test_unit_verifies_and_is_scored(deb):
    r = sh("systemd-analyze", "verify", UNIT, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    s = sh("systemd-analyze", "security", "--offline=true", UNIT, check=False)
    m = re.search(r"Overall exposure level for gatewatch.service: ([0-9.]+)", s.stdout)
    assert m, s.stdout[-2000:] + s.stderr
    print(f"\nsystemd-analyze security exposure: {m.group(1)}")
    assert float(m.group(1)) <= 3.0


def unit_caps() -> list[str]:
    text = Path(UNIT).read_text()
    ambient = re.search(r"^AmbientCapabilities=(.*)$", text, re.M).group(1).split()
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M).group(1).split()
    assert ambient == bounding
    return [c.removeprefix("CAP_").lower() for c in ambient]


@pytest.fixture
def world_tmp():
    # pytest's tmp_path sits under a 0700 directory the service user cannot enter.
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="gwpkg-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_runs_as_gatewatch_with_exactly_the_units_capabilities(deb, topo, httpd, world_tmp):
    tmp_path = world_tmp
    caps = ",".join("+" + c for c in unit_caps())
    state = tmp_path / "state"
    state.mkdir()
    shutil.chown(state, "gatewatch", "gatewatch")
    os.chmod(tmp_path, 0o755)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[sensor]\nstate_dir = "{state}"\n[metrics]\nenabled = false\n'
                   '[[output]]\nspec = "stdout"\n')
    os.chmod(cfg, 0o644)
    base = ["ip", "netns", "exec", topo.srv_ns, "setpriv", "--reuid=gatewatch", "--regid=gatewatch",
            "--clear-groups"]
    run = ["/usr/bin/gatewatch", "run", "--config", str(cfg), "--iface", topo.srv_if]
    out = tmp_path / "out.jsonl"
    err = tmp_path / "err.log"
    with open(out, "w") as o, open(err, "w") as e:
        p = subprocess.Popen(base + [f"--inh-caps={caps}", f"--ambient-caps={caps}", "--"] + run,
                             stdout=o, stderr=e)
    try:
        deadline = time.time() + 10
        while "gatewatch running" not in err.read_text() and time.time() < deadline:
            assert p.poll() is None, err.read_text()
            time.sleep(0.1)
        gwlib.curl(topo, f"http://{topo.srv4}:8080/packaged-capture")
        deadline = time.time() + 5
        while "/packaged-capture" not in out.read_text() and time.time() < deadline:
            time.sleep(0.1)
    finally:
        p.send_signal(2)
        rc = p.wait(timeout=15)
    assert "/packaged-capture" in out.read_text(), err.read_text()
    assert rc == 0, err.read_text()

    # The same without capabilities: refused, with a message that says what is missing.
    r = sh(*base, "--", *run, check=False, timeout=20)
    assert r.returncode != 0
    assert "CAP_BPF" in r.stderr and "panicked" not in r.stderr, r.stderr


def test_remove_keeps_config_purge_removes_it(deb):
    sh("dpkg", "-r", "gatewatch")
    assert not os.path.exists("/usr/bin/gatewatch")
    assert os.path.exists("/etc/gatewatch/gatewatch.toml"), "remove must keep the conffile"
    sh("dpkg", "--purge", "gatewatch")
    assert not os.path.exists("/etc/gatewatch"), "purge removes the config"
    assert not os.path.exists("/var/lib/gatewatch")
    assert sh("id", "gatewatch", check=False).returncode != 0


def test_rpm_lists_files_and_scripts():
    rpm = _need_package("target/generate-rpm/gatewatch-*.rpm")
    if shutil.which("rpm") is None:
        pytest.fail("rpm is not installed; run integration-tests/setup.sh")
    print(f"\n{rpm.name}: {rpm.stat().st_size / 1e6:.1f} MB")
    files = sh("rpm", "-qlp", str(rpm)).stdout.split()
    for path in ["/usr/bin/gatewatch", "/etc/gatewatch/gatewatch.toml",
                 "/usr/lib/systemd/system/gatewatch.service",
                 "/usr/share/gatewatch/schemas/event.schema.json"]:
        assert path in files, files
    # Every rule of the repository's pack (http, l4, mcp, sensor), with its fixtures.
    for rule in sorted((ROOT / "rules").rglob("*.rhai")):
        rel = rule.relative_to(ROOT / "rules")
        for f in (rel, rel.with_suffix(".tests.json")):
            assert f"/usr/share/gatewatch/rules/{f}" in files, f"{f} missing from the rpm"
    assert "/etc/gatewatch/gatewatch.toml" in sh("rpm", "-qcp", str(rpm)).stdout
    scripts = sh("rpm", "-qp", "--scripts", str(rpm)).stdout
    assert "useradd --system" in scripts and "systemctl stop gatewatch.service" in scripts, scripts

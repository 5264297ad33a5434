"""The path the nightly takes, for real: `harness matrix` over refos and
refos-noapparmor, each distro in a pytest process of its own (the order in which
pytest loads plugins differs there from `make run`, which once broke testinfra's
`host`). refos must pass; refos-noapparmor's AppArmor failures must show as the
bug it reproduces, not as red."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from harness.paths import REPO
from harness.plugin.bugs import Bug
from tests.bugs.known import MOBY_44900
from tests.driver.remote_host import remote_host

pytestmark = pytest.mark.vm
SUITES = ("test_testinfra_host.py", "test_facts.py", "test_docker.py")
LOCAL = "qemu:///system"


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The run, kept in artifacts/matrix-test/ (report.html included) for people to read,
    over two hosts: this one, and a "remote" one reached through a real sshd of its own
    (tests/driver/remote_host.py), one distro on each."""
    artifacts = REPO / "artifacts" / "matrix-test"
    shutil.rmtree(artifacts, ignore_errors=True)  # this test's own folder, from its last run
    with remote_host(tmp_path_factory.mktemp("hypervisor")) as host:
        cmd = [sys.executable, "-m", "harness", "matrix", "--distro", "refos,refos-noapparmor",
               "--offline", "--artifacts", str(artifacts), "--margin-mib", "512",
               "--libvirt-uri", LOCAL, "--libvirt-uri", host.uri]
        cmd += [a for s in SUITES for a in ("--suite", str(REPO / "tests/suites" / s))]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=1800), artifacts


def _cases(junit: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}


def test_matrix_passes_refos_with_the_testinfra_tests(matrix_run):
    result, artifacts = matrix_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    status = json.loads((artifacts / "refos" / "status.json").read_text())
    assert status["exit_code"] == 0 and status["failed_tests"] == []
    cases = _cases(artifacts / "refos" / "junit.xml")
    for name in ("test_docker_unit_is_enabled_and_running", "test_root_mount_is_as_promised"):
        assert len(cases[name]) == 0, ET.tostring(cases[name], encoding="unicode")[:2000]
    report = (artifacts / "report.md").read_text()
    assert "testinfra_host" in report and "FAILED" not in result.stdout


def test_matrix_shows_refos_noapparmor_reproducing_its_bug_not_failing(matrix_run):
    result, artifacts = matrix_run
    bug = Bug.from_mark(MOBY_44900.mark, "moby#44900")
    status = json.loads((artifacts / "refos-noapparmor" / "status.json").read_text())
    assert status["exit_code"] == 0 and status["failed_tests"] == []
    assert any(bug.url in line for line in status["reproduced"]), status
    skipped = _cases(artifacts / "refos-noapparmor" / "junit.xml")[
        "test_container_runs_from_image_loaded_offline"].find("skipped")
    assert skipped is not None and skipped.get("message") == f"reproduces {bug.url}"
    assert f"reproduces [{bug.url}]" in (artifacts / "report.md").read_text()
    assert "expected" in result.stdout and bug.url in result.stdout


def test_matrix_runs_one_distro_on_each_host_remote_one_through_its_ssh(matrix_run):
    _, artifacts = matrix_run
    status = {name: json.loads((artifacts / name / "status.json").read_text())
              for name in ("refos", "refos-noapparmor")}
    hosts = {s["libvirt_uri"] for s in status.values()}
    assert len(hosts) == 2 and LOCAL in hosts, status
    assert all(s["exit_code"] == 0 for s in status.values()), status
    # The remote one's consoles are ptys there, streamed back into console.log here.
    on_remote = next(n for n, s in status.items() if s["libvirt_uri"] != LOCAL)
    xmls = list((artifacts / on_remote).rglob("domain.xml"))
    assert xmls and all('<serial type="pty">' in x.read_text() for x in xmls), xmls
    assert all((x.parent / "console.log").exists() for x in xmls), xmls

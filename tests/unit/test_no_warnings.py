"""A clean run prints no warning of the harness's own. The suite test that records
Docker's version runs here, with a stand-in machine that answers its two commands
(the capability under test is the recording, not Docker), under
`-W error::pytest.PytestWarning` and the default junit family (xunit2)."""

import shutil
import subprocess
import sys
import textwrap
from xml.etree import ElementTree as ET

from harness.paths import REPO
from tests.helpers import run_pytest

STAND_IN = """
import pytest

class Answers:
    def succeed(self, command):
        return "27.5.1\\n" if "Server.Version" in command else "overlay2\\n"

@pytest.fixture
def machine():
    return Answers()

@pytest.fixture(autouse=True)
def _shared_machine_checks():
    return None  # no guest to check for badness
"""


def test_recording_dockers_version_warns_nothing_and_lands_in_junit(tmp_path):
    suite = tmp_path / "suites"
    suite.mkdir()
    shutil.copy(REPO / "tests" / "suites" / "test_docker.py", suite)
    (suite / "conftest.py").write_text(textwrap.dedent(STAND_IN))
    junit = tmp_path / "junit.xml"
    result = run_pytest("-W", "error::pytest.PytestWarning", "--distro=refos",
                        f"--junitxml={junit}", "--rootdir", str(tmp_path),
                        f"{suite / 'test_docker.py'}::test_docker_info_answers", cwd=tmp_path,
                        env={"PYTHONPATH": str(REPO)})  # the suite imports tests.bugs
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "warning" not in out.lower(), out[-3000:]
    found = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert found == {"docker_version": "27.5.1", "storage_driver": "overlay2"}


def test_pytest_started_by_the_cli_warns_nothing():
    """`harness run` and `harness repro` import the package, then start pytest in the
    same process; pytest must not warn that it cannot rewrite it."""
    code = ("import sys, pytest, harness.cli; sys.exit(pytest.main(['-W', "
            "'error::pytest.PytestWarning', '--collect-only', '-q', '-p', 'no:cacheprovider', "
            "'tests/unit/test_accel.py']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "warning" not in out.lower(), out[-3000:]

"""A test that meets a reported bug carries its `bug` marker: on an affected distro
its failure with the symptom is "reproduces <url>", not red; any other failure, or a
pass, is red (kola's denylist, as data on the test). moby#44900 is the example:
refos-noapparmor is built to have it, and two suite tests meet it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from harness.paths import REPO
from harness.plugin import bugs
from tests.bugs.known import MOBY_44900
from tests.helpers import run_pytest

BUG = bugs.Bug.from_mark(MOBY_44900.mark, "moby#44900")
# The daemon's error as moby/moby#44900 quotes it (Docker 23.0.0, Debian 11).
ERROR = ("docker: Error response from daemon: AppArmor enabled on system but the "
         "docker-default profile could not be loaded: running `apparmor_parser "
         "apparmor_parser --version` failed with output: \nerror: exec: \"apparmor_parser\": "
         "executable file not found in $PATH\n")
SUITES = ("tests/suites/test_docker.py::test_container_runs_from_image_loaded_offline",
          "tests/suites/test_rollback.py::"
          "test_update_then_rollback_switch_slots_and_keep_docker_state")


def test_two_suite_tests_and_the_bug_case_meet_moby_44900_on_refos_noapparmor():
    cases = bugs.collect(REPO / "tests" / "suites", bugs.BUGS)
    meeting = {c.nodeid for c in cases if c.bug.url == BUG.url}
    assert meeting == {*SUITES, "tests/bugs/test_docker_apparmor.py::"
                       "test_docker_run_works_with_apparmor_enabled_kernel"}
    assert BUG.affected == ("refos-noapparmor",) and BUG.fixed == ("refos",)


@pytest.mark.parametrize(("outcome", "message", "expected"), [
    ("failed", f"`docker run` exited 125\n--- stderr ---\n{ERROR}", ("skipped", BUG.url)),
    ("failed", "docker: no space left on device", ("failed", "")),
    ("passed", "", ("failed", "")),
    ("skipped", "not promised", ("skipped", "")),
])
def test_only_the_symptom_turns_a_failure_into_a_reproduction(outcome, message, expected):
    verdict = bugs.judge(BUG, outcome, message)
    assert (verdict.outcome, verdict.reproduces) == expected
    if verdict.outcome == "failed":
        assert BUG.url in verdict.message


def _run(tmp_path: Path, body: str, distro: str = "refos-noapparmor",
         marker: str = "MOBY_44900") -> tuple[int, ET.Element]:
    """pytest with the harness plugin on a stand-in for the suite test, as the
    matrix runs it (no VM: the stand-in fails or passes by itself)."""
    suite = tmp_path / "tests" / "suites"
    suite.mkdir(parents=True)
    (suite / "test_docker.py").write_text(textwrap.dedent(f"""
        import pytest
        from tests.bugs.known import MOBY_44900

        @{marker}
        def test_container_runs_from_image_loaded_offline():
            {body}
    """))
    junit = tmp_path / "junit.xml"
    code = run_pytest(f"--distro={distro}", f"--junitxml={junit}", "--rootdir",
                      str(tmp_path), str(suite), cwd=tmp_path,
                      env={"PYTHONPATH": str(REPO)}).returncode
    return code, ET.parse(junit).getroot().find(".//testcase")


def test_the_bugs_failure_is_reported_as_a_reproduction_and_the_run_is_green(tmp_path):
    code, case = _run(tmp_path, f"raise RuntimeError({ERROR!r})")
    assert code == 0
    assert case.find("skipped").get("message") == f"reproduces {BUG.url}"


def test_a_different_failure_on_the_same_test_is_still_red(tmp_path):
    code, case = _run(tmp_path, "raise AssertionError('no space left on device')")
    assert code == 1
    failure = case.find("failure")
    assert "not with the symptom" in failure.get("message", "") + (failure.text or "")


def test_the_bug_no_longer_reproducing_is_red(tmp_path):
    code, case = _run(tmp_path, "pass")
    assert code == 1
    assert "fixed or changed" in (case.find("failure").text or "")


def test_on_a_distro_the_bug_does_not_affect_its_symptom_is_red(tmp_path):
    code, case = _run(tmp_path, f"raise RuntimeError({ERROR!r})", distro="refos")
    assert code == 1 and case.find("failure") is not None


def test_a_bug_marker_without_a_symptom_is_a_usage_error(tmp_path):
    code, _ = _run(tmp_path, "pass", marker='pytest.mark.bug(url="u", affected=["refos"])')
    assert code == 4  # pytest's usage error, before any test runs


REPRO = """
import sys
import pytest
from harness import cli
outcomes = cli._Outcomes()
code = pytest.main([sys.argv[1], "--distro=refos-noapparmor", "-p", "no:cacheprovider",
                    "--rootdir", sys.argv[2]], plugins=[outcomes])
print("verdict:", outcomes.verdict(int(code)))
"""


@pytest.mark.parametrize(("body", "verdict"), [
    (f"raise RuntimeError({ERROR!r})", "REPRODUCED"),
    ("pass", "did not reproduce: pytest exited 1"),
    ("pytest.skip('no image')", "not tried"),
])
def test_harness_repro_tells_a_reproduction_from_a_pass_and_a_skip(tmp_path, body, verdict):
    """`harness repro`'s verdict, from what the bug plugin made of the outcome."""
    _run(tmp_path, body)  # writes the stand-in
    test = tmp_path / "tests" / "suites" / "test_docker.py"
    out = subprocess.run([sys.executable, "-c", REPRO, str(test), str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert f"verdict: {verdict}" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    if verdict == "REPRODUCED":  # and the failure is shown, not hidden as expected
        assert "--- the failure ---" in out.stdout and "apparmor_parser" in out.stdout

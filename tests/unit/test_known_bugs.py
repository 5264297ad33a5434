"""A distro built to reproduce a bug: its failures with the symptom are "reproduces
<url>", not red; any other failure, or a pass, is red (kola's denylist, as data)."""

import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from harness import catalog
from harness.plugin import bugs
from tests.helpers import run_pytest

BUG = catalog.get("refos-noapparmor").reproduces[0]
TEST = "tests/suites/test_docker.py::test_container_runs_from_image_loaded_offline"


def test_refos_noapparmor_reproduces_moby_44900_in_two_suite_tests():
    assert BUG.url == "https://github.com/moby/moby/issues/44900"
    assert TEST in BUG.tests and len(BUG.tests) == 2


@pytest.mark.parametrize(("outcome", "text", "expected"), [
    ("failed", f"docker: Error response from daemon: {BUG.symptom}.", ("skipped", BUG.url)),
    ("failed", "docker: no space left on device", ("failed", "")),
    ("passed", "", ("failed", "")),
    ("skipped", "not promised", ("skipped", "")),
])
def test_only_the_symptom_turns_a_failure_into_a_reproduction(outcome, text, expected):
    verdict = bugs.judge((BUG,), TEST, outcome, text)
    assert (verdict.outcome, verdict.reproduces) == expected
    if verdict.outcome == "failed":
        assert BUG.url in verdict.message


def test_tests_the_bug_does_not_name_are_left_alone():
    other = "tests/suites/test_readonly.py::test_promised_readonly_paths_are_mounted_readonly"
    assert bugs.judge((BUG,), other, "failed", BUG.symptom) == bugs.Verdict("failed")


def _run(tmp_path: Path, body: str) -> tuple[int, ET.Element]:
    """pytest with the harness plugin on a stand-in for the suite test, as the
    matrix runs it (no VM: the stand-in fails or passes by itself)."""
    suite = tmp_path / "tests" / "suites"
    suite.mkdir(parents=True)
    (suite / "test_docker.py").write_text(textwrap.dedent(f"""
        def test_container_runs_from_image_loaded_offline():
            {body}
    """))
    junit = tmp_path / "junit.xml"
    code = run_pytest("--distro=refos-noapparmor", f"--junitxml={junit}",
                      "--rootdir", str(tmp_path), str(suite), cwd=tmp_path).returncode
    return code, ET.parse(junit).getroot().find(".//testcase")


def test_the_known_failure_is_reported_as_a_reproduction_and_the_run_is_green(tmp_path):
    code, case = _run(tmp_path, f"raise AssertionError({BUG.symptom!r})")
    assert code == 0
    assert case.find("skipped").get("message") == f"reproduces {BUG.url}"


def test_a_different_failure_on_the_same_test_is_still_red(tmp_path):
    code, case = _run(tmp_path, "raise AssertionError('no space left on device')")
    assert code == 1
    assert "not with the symptom" in case.find("failure").get("message", "") + \
        (case.find("failure").text or "")


def test_the_bug_no_longer_reproducing_is_red(tmp_path):
    code, case = _run(tmp_path, "pass")
    assert code == 1
    assert "fixed or changed" in (case.find("failure").text or "")

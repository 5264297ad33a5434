"""The comparison report, rendered from an artifacts tree this test writes.

The tree below holds SAMPLE INPUTS for the renderer, shaped like what a matrix
run leaves (facts.json, junit.xml, timings.json, status.json, matrix.json).
They are not measurements of any distro; real values come only from a run."""

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from harness import cli, report
from harness.paths import REPO
from harness.report import facts

CHROMIUM = Path("/usr/bin/chromium")

SAMPLE_FACTS = {
    "refos": {
        "image_size": facts.Value("812 MiB", "", "stat refos.qcow2"),
        "kernel": facts.Value("6.1.0-sample-cloud-amd64", "", "uname -r"),
        "docker": facts.Value("20.10.sample", "", "docker version"),
        "init": facts.Value("systemd", "", "ps -p 1 -o comm="),
        "package_manager": facts.Value("none of rpm-ostree, tdnf, snap, snappy, ros"),
        "bundled_tools": facts.Value("none of etcdctl, fleetctl, atomic"),
        "mount /": facts.Value("squashfs (ro,relatime) on /"),
        "mount /usr": facts.Value("squashfs (ro,relatime) on /"),
    },
    "refos-noapparmor": {
        "image_size": facts.Value("790 MiB"),
        "kernel": facts.Value("6.1.0-sample-cloud-amd64"),
        "docker": facts.Value(None, "not measured: `docker version` exited 1: "
                                    "Cannot connect to the Docker daemon (sample)"),
        "init": facts.Value("systemd"),
        "package_manager": facts.Value("none of rpm-ostree, tdnf, snap, snappy, ros"),
        "bundled_tools": facts.Value("none of etcdctl, fleetctl, atomic"),
        "mount /": facts.Value("squashfs (ro,relatime) on /"),
        "mount /usr": facts.Value("squashfs (ro,relatime) on /"),
    },
}
SAMPLE_TIMINGS = {"refos": {"kernel": 5.2, "ssh": 64.9, "command": 68.9, "ready": 92.7},
                  "refos-noapparmor": {"kernel": 6.0, "ssh": 70.1, "command": 73.0,
                                       "ready": 101.4}}
NOT_RUN = "flatcar: image not cached and --offline forbids downloading (sample reason)"

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="2" tests="5">
<testcase classname="tests.suites.test_docker" name="test_docker_info_answers" time="1.0"/>
<testcase classname="tests.suites.test_docker" name="test_container_runs" time="2.0">{fail}
</testcase>
<testcase classname="tests.suites.test_readonly" name="test_ro" time="1.0"/>
<testcase classname="tests.suites.test_rollback" name="test_rollback" time="0.0">
<skipped type="pytest.skip" message="sample: no update payload">skip text</skipped></testcase>
<testcase classname="tests.suites.test_facts" name="test_facts" time="1.0"/>
</testsuite></testsuites>
"""
FAILURE = '<failure message="AssertionError: sample failure">traceback</failure>'


@pytest.fixture
def sample_run(tmp_path: Path) -> Path:
    """An artifacts tree: two distros that ran, one whose image was missing."""
    root = tmp_path / "artifacts"
    for name, values in SAMPLE_FACTS.items():
        d = root / name
        (d / f"{name}-shared").mkdir(parents=True)
        record = {"distro": name, "facts": facts.to_json(values),
                  "timings": SAMPLE_TIMINGS[name]}
        (d / "facts.json").write_text(json.dumps(record))
        fail = FAILURE if name == "refos-noapparmor" else ""
        (d / "junit.xml").write_text(JUNIT.format(fail=fail))
        (d / "status.json").write_text(json.dumps({"ran": True, "exit_code": 0}))
    (root / "flatcar").mkdir()
    (root / "flatcar" / "status.json").write_text(json.dumps({"ran": False, "reason": NOT_RUN}))
    plan = {"distros": [{"distro": n} for n in ("refos", "refos-noapparmor", "flatcar")]}
    (root / "matrix.json").write_text(json.dumps(plan))
    return root


def test_markdown_row_shows_each_measured_value(sample_run):
    md = report.markdown(report.load(sample_run), "now")
    row = next(line for line in md.splitlines() if line.startswith("| **refos** |"))
    for value in ("812 MiB", "6.1.0-sample-cloud-amd64", "20.10.sample", "systemd",
                  "squashfs (ro,relatime) on /", "92.7 s"):
        assert value in row


def test_unmeasured_value_says_why(sample_run):
    md = report.markdown(report.load(sample_run), "now")
    row = next(line for line in md.splitlines() if line.startswith("| **refos-noapparmor** |"))
    assert "not measured [" in row
    assert "Cannot connect to the Docker daemon (sample)" in md


def test_distro_with_missing_image_is_reported_not_run_with_reason(sample_run):
    runs = {r.name: r for r in report.load(sample_run)}
    assert runs["flatcar"].status == f"not run: {NOT_RUN}"
    assert runs["flatcar"].fact("kernel").why == f"not run: {NOT_RUN}"
    assert NOT_RUN in report.markdown(list(runs.values()), "now")


def test_junit_counts_per_suite_with_failures_and_skip_reasons(sample_run):
    runs = {r.name: r for r in report.load(sample_run)}
    docker = runs["refos-noapparmor"].suites["docker"]
    assert (docker.passed, docker.failed, docker.skipped) == (1, 1, 0)
    assert ("test_container_runs", "failed: AssertionError: sample failure", "") in docker.notes
    rollback = runs["refos"].suites["rollback"]
    assert rollback.skipped == 1
    assert rollback.notes == [("test_rollback", "skipped: sample: no update payload", "")]


def test_boot_phases_are_durations_between_marks():
    got = report.phases({"kernel": 5.0, "ssh": 65.0, "command": 69.0, "ready": 93.0})
    assert got == [("firmware to kernel", 5.0), ("to SSH", 60.0), ("to first command", 4.0),
                   ("to boot finished", 24.0)]
    assert report.phases({"kernel": 5.0}) == [("firmware to kernel", 5.0)]


def test_boot_phases_come_from_the_cold_boot_behind_a_restored_shared_machine(sample_run):
    d = sample_run / "refos"
    record = json.loads((d / "facts.json").read_text())
    del record["timings"]
    (d / "facts.json").write_text(json.dumps(record))
    # What harness.plugin keeps for a restored machine: its own timings are the
    # restore's; boot.json holds those of the template that booted cold.
    (d / "refos-shared" / "timings.json").write_text(json.dumps({"restore": 2.0,
                                                                 "command": 3.0}))
    (d / "refos-shared" / "boot.json").write_text(json.dumps(
        {"machine": "refos-t1a2b3c", "timings": {"kernel": 1.0, "ready": 9.0}}))
    run = report.load_distro(d)
    assert run.timings == {"kernel": 1.0, "ready": 9.0}
    assert "9.0 s" in report.markdown([run], "now")


def test_a_known_bug_reproduced_is_shown_with_its_link_and_not_as_a_failure(sample_run):
    junit = sample_run / "refos-noapparmor" / "junit.xml"
    url = "https://github.com/moby/moby/issues/44900"
    junit.write_text(JUNIT.format(fail=f'<skipped type="pytest.xfail" '
                                       f'message="reproduces {url}"/>'))
    run = report.load_distro(sample_run / "refos-noapparmor")
    docker = run.suites["docker"]
    assert (docker.failed, docker.reproduced) == (0, 1)
    page = report.page([run], "now")
    assert f'class="reproduces nw">reproduces <a href="{url}">' in page or \
        f'<a href="{url}">{url}</a>' in page
    assert 'class="failed' not in page
    assert f'<li class="reproduces">docker: test_container_runs: reproduces <a href="{url}">' \
        in page  # the list item's text is the text, no markup leaking into it
    assert f"reproduces [{url}]({url})" in report.markdown([run], "now")


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '{"facts": [1]}', '{"facts": 3}'])
def test_one_malformed_facts_file_spoils_only_its_own_distro(sample_run, bad):
    (sample_run / "refos-noapparmor" / "facts.json").write_text(bad)
    runs = {r.name: r for r in report.load(sample_run)}
    assert runs["refos"].fact("kernel").value == "6.1.0-sample-cloud-amd64"
    assert runs["refos-noapparmor"].fact("kernel").value is None
    assert "malformed" in runs["refos-noapparmor"].fact("kernel").why


def test_a_malformed_matrix_plan_falls_back_to_the_distro_folders(sample_run):
    (sample_run / "matrix.json").write_text('{"distros": [{"distro": "../../etc"}, 7]')
    assert {r.name for r in report.load(sample_run)} == {"refos", "refos-noapparmor",
                                                         "flatcar"}


def test_markdown_escapes_html_carriage_returns_and_names(sample_run):
    hostile = facts.Value("<img src=x onerror=alert(1)>\rinjected | cell")
    values = {**SAMPLE_FACTS["refos"], "kernel": hostile}
    run = report.DistroRun("<b>evil</b>", facts=values)
    md = report.markdown([run], "now")
    assert "<img" not in md and "<b>" not in md and "\r" not in md
    assert "&lt;img src=x onerror=alert(1)&gt; injected \\| cell" in md


def test_report_on_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        report.load(tmp_path / "nope")


def test_html_is_self_contained(sample_run):
    page = report.page(report.load(sample_run), "now")
    assert "<script" not in page and "<link" not in page and "url(" not in page
    # The only URL is the SVG namespace, which is a name, not a fetch.
    assert page.count("http") == page.count('xmlns="http://www.w3.org/2000/svg"') == 1
    assert page.count("<rect") >= 2 * len(report.PHASES)


def test_report_command_writes_markdown_and_html(sample_run):
    assert cli.main(["report", str(sample_run)]) == 0
    assert (sample_run / "report.md").read_text().startswith("# Container OS comparison")
    assert "<svg" in (sample_run / "report.html").read_text()


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,900", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _pixel_bytes(path: Path) -> bytes:
    """The PNG's decompressed image data (filtered scanlines), enough to tell
    a blank page from a drawn one without an imaging library."""
    data, pos, idat = path.read_bytes(), 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_page_renders_in_headless_chromium(sample_run, tmp_path):
    _md, page = report.write(sample_run)
    shot = tmp_path / "report.png"
    rendered = _chromium(f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "p1")
    assert shot.exists(), rendered.stderr[-2000:]
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>")
    blank = tmp_path / "blank.png"
    _chromium(f"--screenshot={blank}", blank_page.as_uri(), profile=tmp_path / "p2")
    assert _png_size(shot) == (1280, 900)
    # A drawn page has far more distinct filtered bytes (and bytes) than a blank one.
    drawn, empty = _pixel_bytes(shot), _pixel_bytes(blank)
    assert len(set(drawn)) > 4 * max(1, len(set(empty))), (len(set(drawn)), len(set(empty)))
    assert shot.stat().st_size > 5 * blank.stat().st_size
    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p3").stdout
    assert 'id="comparison"' in dom and 'id="suites"' in dom and 'id="boot-chart"' in dom
    keep = REPO / "artifacts" / "report-screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)

"""The matrix's decisions (which distros, how many at once, on which host) as pure
functions over plain numbers, and its runs with a stand-in suite that boots nothing."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness import catalog, images, matrix, report
from harness.paths import REPO
from harness.vm import accel
from tests.helpers import run_pytest

# -- selection ----------------------------------------------------------------------------


def test_select_takes_a_comma_list_in_order_without_repeats():
    assert matrix.select("refos-noapparmor, refos,refos") == ["refos-noapparmor", "refos"]


def test_select_all_is_every_catalog_entry():
    assert matrix.select("all") == list(catalog.load())


def test_select_unknown_name_lists_the_known_ones():
    with pytest.raises(catalog.CatalogError, match=r"unknown distro 'nope'; known: .*refos"):
        matrix.select("refos,nope")


# -- memory -------------------------------------------------------------------------------


def test_budget_counts_the_biggest_vms_that_fit_above_the_margin():
    assert matrix.budget([1280, 1280, 2304], free_mib=5000, margin_mib=1024) == 2
    assert matrix.budget([1280, 1280], free_mib=24000, margin_mib=1024) == 2
    assert matrix.budget([1280] * 10, free_mib=8000, margin_mib=1024) == 5


def test_budget_is_zero_when_not_even_one_fits():
    assert matrix.budget([2304], free_mib=3000, margin_mib=1024) == 0


def test_need_is_what_a_guest_really_costs_under_its_accelerator():
    job = matrix.jobs(["refos"])[0]
    assert matrix.need_mib(job, "tcg") == accel.guest_cost_mib(1024, "tcg")
    assert matrix.need_mib(job, "tcg") == 1024 + accel.TB_CACHE_MIB + accel.QEMU_OVERHEAD_MIB
    assert matrix.need_mib(job) == matrix.need_mib(job, "tcg")  # auto: counted as TCG
    assert matrix.need_mib(job, "kvm") == 1024 + accel.QEMU_OVERHEAD_MIB


def test_place_picks_the_host_with_most_free_memory_that_fits():
    free = {"qemu:///system": 3000, "qemu+ssh://a/system": 9000, "qemu+ssh://b/system": 5000}
    assert matrix.place(1280, free, margin_mib=1024) == "qemu+ssh://a/system"
    assert matrix.place(7000, free, margin_mib=1024) == "qemu+ssh://a/system"
    assert matrix.place(8000, free, margin_mib=1024) is None


def test_place_breaks_ties_by_the_order_hosts_were_given():
    assert matrix.place(100, {"x": 5000, "y": 5000}, margin_mib=0) == "x"


def test_hosts_make_a_job_wait_until_memory_is_released():
    hosts = matrix.Hosts({"h": 3000}, margin_mib=1000)
    assert hosts.acquire(1500) == "h"
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(hosts.acquire(1500)))
    waiter.start()
    waiter.join(0.3)
    assert got == []  # 500 MiB left above the margin: it waits
    hosts.release("h", 1500)
    waiter.join(5)
    assert got == ["h"]


def test_mem_available_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 24000000 kB\nMemFree: 1000 kB\nMemAvailable: 20480000 kB\n")
    assert matrix.mem_available_mib(meminfo) == 20000


def test_mem_available_of_this_machine_is_positive():
    assert matrix.mem_available_mib() > 0


def test_local_uris_are_told_from_remote_ones():
    assert matrix.is_local("qemu:///system")
    assert not matrix.is_local("qemu+ssh://host/system")


# -- runs, with a stand-in suite ----------------------------------------------------------

# The stand-in suite logs its start and end, and ends only once `release` exists:
# a test holds the runs to see which started together (two minutes at most, then it
# fails instead of hanging).
STAND_IN = '''
import os, pathlib, time
def test_stand_in(pytestconfig):
    events = pathlib.Path(os.environ["MATRIX_EVENTS"])
    distro = pytestconfig.getoption("--distro")
    with events.open("a") as f:
        f.write(f"start {distro}\\n")
    for _ in range(1200):
        if events.with_name("release").exists():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("never released")
    with events.open("a") as f:
        f.write(f"end {distro}\\n")
'''


def _stand_in_run(tmp_path, monkeypatch, free_mib: int, resolve=lambda name: None,
                  hold=None):
    """Run the matrix over refos and refos-noapparmor with a suite that boots nothing
    and only logs when it ran (a stand-in for tests/suites, which boots VMs). `hold`,
    given the event log, looks at the runs while they are held, then they end."""
    suite = tmp_path / "test_stand_in.py"
    suite.write_text(STAND_IN)
    events, release = tmp_path / "events", tmp_path / "release"
    monkeypatch.setenv("MATRIX_EVENTS", str(events))
    opts = matrix.MatrixOptions(tmp_path / "artifacts", ["qemu:///system"], [str(suite)])
    if hold is None:
        release.touch()
    result = {}
    runner = threading.Thread(target=lambda: result.update(matrix.run(
        ["refos", "refos-noapparmor"], opts, {"qemu:///system": free_mib}, resolve)))
    runner.start()
    try:
        if hold is not None:
            hold(events)
    finally:
        release.touch()
        runner.join()
    log = events.read_text().splitlines() if events.exists() else []
    return result, log, opts.artifacts


def _wait_for_starts(events, count: int) -> list[str]:
    """The event log once `count` runs have started (a guard of two minutes)."""
    deadline = time.monotonic() + 120
    while not events.exists() or events.read_text().count("start ") < count:
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.1)
    return events.read_text().splitlines()


def test_matrix_runs_distros_in_parallel_when_memory_allows(tmp_path, monkeypatch):
    # Both runs start while both are held: they ran at the same time.
    statuses, log, artifacts = _stand_in_run(tmp_path, monkeypatch, free_mib=8000,
                                             hold=lambda events: _wait_for_starts(events, 2))
    assert all(s["ran"] and s["exit_code"] == 0 for s in statuses.values()), statuses
    assert sorted(log[:2]) == ["start refos", "start refos-noapparmor"], log
    for name in statuses:
        assert (artifacts / name / "junit.xml").exists()
        assert json.loads((artifacts / name / "status.json").read_text())["ran"]


def test_matrix_runs_one_at_a_time_when_memory_fits_one(tmp_path, monkeypatch):
    def one_running(events):
        _wait_for_starts(events, 1)
        with matrix._CHILDREN_LOCK:  # the matrix's own record of its running children
            assert len(matrix._CHILDREN) == 1

    statuses, log, _ = _stand_in_run(tmp_path, monkeypatch, free_mib=1024 + 1280 + 500,
                                     hold=one_running)
    assert all(s["ran"] for s in statuses.values())
    assert [e.split()[0] for e in log] == ["start", "end", "start", "end"], log
    assert log[0].split()[1] == log[1].split()[1], log


def test_distro_with_missing_image_is_not_run_and_fails_no_one(tmp_path, monkeypatch):
    def resolve(name):
        if name == "refos-noapparmor":
            raise images.ImageUnavailable(f"{name}: not cached (stand-in reason)")

    statuses, log, artifacts = _stand_in_run(tmp_path, monkeypatch, 8000, resolve)
    assert statuses["refos-noapparmor"] == {
        "ran": False, "reason": "image unavailable: refos-noapparmor: not cached (stand-in reason)"}
    assert statuses["refos"]["exit_code"] == 0 and log == ["start refos", "end refos"]
    assert matrix.exit_code(statuses) == 0
    runs = {r.name: r for r in report.load(artifacts)}
    assert runs["refos-noapparmor"].status.startswith("not run: image unavailable")
    assert runs["refos"].suites["stand_in"].passed == 1


def test_distro_too_big_for_any_host_is_not_run(tmp_path, monkeypatch):
    statuses, log, _ = _stand_in_run(tmp_path, monkeypatch, free_mib=2000)
    assert not log
    assert all("no host has that free" in s["reason"] for s in statuses.values())


# -- pytest --distro=a,b ------------------------------------------------------------------


def test_pytest_distro_list_runs_each_suite_test_once_per_distro():
    out = run_pytest("tests/suites", "--collect-only", "-q",
                  "--distro=refos,refos-noapparmor").stdout.splitlines()
    ids = [line for line in out if "::" in line]
    assert len([i for i in ids if i.endswith("[refos]")]) == \
        len([i for i in ids if i.endswith("[refos-noapparmor]")]) > 3


def test_pytest_unknown_distro_in_a_list_is_a_usage_error():
    result = run_pytest("tests/suites", "--collect-only", "--distro=refos,nope")
    assert result.returncode == 4
    assert "unknown distro 'nope'; known:" in result.stderr


def test_xdist_loadgroup_keeps_each_distro_on_one_worker(tmp_path):
    """Real xdist scheduling; the probe plugin records each test's worker and runs none."""
    probe = tmp_path / "workers.txt"
    result = run_pytest("tests/suites", "-n", "2", "--dist", "loadgroup", "-p", "xdist_probe",
                     "--distro=refos,refos-noapparmor",
                     env={"PYTHONPATH": str(REPO / "tests" / "unit"),
                          "XDIST_PROBE_OUT": str(probe)})
    assert probe.exists(), result.stdout[-2000:] + result.stderr[-2000:]
    workers: dict[str, set[str]] = {}
    for line in probe.read_text().splitlines():
        worker, nodeid = line.split(" ", 1)
        distro = nodeid.rsplit("[", 1)[1].split("]")[0].split("-nocloud")[0].split("-config")[0]
        workers.setdefault(distro, set()).add(worker)
    assert set(workers) == {"refos", "refos-noapparmor"}
    assert all(len(w) == 1 for w in workers.values()), workers
    assert workers["refos"] != workers["refos-noapparmor"]


def test_distro_of_reads_the_leading_parameter_id_with_the_longest_name():
    names = ["refos", "refos-noapparmor"]
    assert matrix.distro_of("t.py::test_a[refos]", names) == "refos"
    assert matrix.distro_of("t.py::test_a[refos-noapparmor-nocloud]", names) == \
        "refos-noapparmor"
    assert matrix.distro_of("t.py::test_bug[refos-refos-noapparmor]", names) == "refos"
    assert matrix.distro_of("t.py::test_a", names) is None


def test_place_spreads_jobs_over_hosts_before_filling_the_biggest():
    free = {"qemu:///system": 16000, "qemu+ssh://b/system": 9000}
    hosts = matrix.Hosts(free, margin_mib=1024)
    first, second = hosts.acquire(1280), hosts.acquire(1280)
    assert {first, second} == set(free)
    hosts.release(second, 1280)
    assert hosts.acquire(1280) == second


SLOW_STAND_IN = '''
import os, time
def test_stand_in(pytestconfig):
    with open(os.environ["MATRIX_TIMES"], "a") as f:
        f.write(pytestconfig.getoption("--distro") + "\\n")
    time.sleep(30)
'''
STOPPED_MATRIX = '''
import sys
from pathlib import Path
from harness import matrix
from harness.signals import unwind_on_sigterm
opts = matrix.MatrixOptions(Path(sys.argv[1]), ["qemu:///system"], [sys.argv[2]])
with unwind_on_sigterm():
    matrix.run(["refos", "refos-noapparmor"], opts, {"qemu:///system": 1024 + 1280 + 500},
               lambda name: None)
'''


def test_a_stopped_matrix_starts_no_distro_whose_turn_comes(tmp_path):
    """Memory fits one distro at a time: SIGTERM while the first runs stops it, and
    the second, whose turn the stop frees, must not start."""
    suite = tmp_path / "test_stand_in.py"
    suite.write_text(SLOW_STAND_IN)
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_MATRIX, str(tmp_path / "art"),
                             str(suite)], cwd=REPO, env={**os.environ, "MATRIX_TIMES":
                                                         str(started)})
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)  # the process this test started
        assert proc.wait(timeout=180) != 0
        # The matrix has ended, and with it any chance to start the second distro.
        assert len(started.read_text().splitlines()) == 1, started.read_text()
        statuses = {d: json.loads((tmp_path / "art" / d / "status.json").read_text())
                    for d in ("refos", "refos-noapparmor")}
        assert sorted(s["ran"] for s in statuses.values()) == [False, True], statuses
        assert [s["reason"] for s in statuses.values() if not s["ran"]] == [
            "the matrix was stopped"], statuses
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_junit_file_planted_as_a_symlink_is_not_written_through(tmp_path):
    """pytest writes --junitxml with a plain open(): the matrix removes whatever stands
    at that name first (an earlier run's file, or a planted link)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    artifacts = tmp_path / "artifacts"
    (artifacts / "refos").mkdir(parents=True)
    (artifacts / "refos" / "junit.xml").symlink_to(victim)
    suite = tmp_path / "test_nothing.py"
    suite.write_text("def test_nothing():\n    pass\n")
    opts = matrix.MatrixOptions(artifacts, ["qemu:///system"], [str(suite)])
    status = matrix.run(["refos"], opts, {"qemu:///system": 8000}, lambda name: None)["refos"]
    assert status["ran"] and status["exit_code"] == 0, status
    assert victim.read_text() == "keep me"
    assert not (artifacts / "refos" / "junit.xml").is_symlink()

"""A cluster's switch never outlives its run, and `harness clean` never touches a
live run's (issue 30). Real vde_switch processes held by real runs (a python
process each, tests/hostile/hold_a_switch.py), killed with SIGKILL; no guest
boots."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.paths import REPO
from harness.vm import network

HOLDER = Path(__file__).with_name("hold_a_switch.py")

pytestmark = pytest.mark.skipif(not network.shutil.which("vde_switch"),
                                reason="vde_switch (Debian package vde2) is not installed: "
                                "`make deps` installs it")


def _env(runtime: Path) -> dict[str, str]:
    return {**os.environ, "HARNESS_RUNTIME": str(runtime),
            "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _hold(runtime: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, str(HOLDER), *args], cwd=REPO, env=_env(runtime),
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, f"the holder exited with {proc.wait()} before starting its switch"
    return proc, json.loads(line)


def _clean(runtime: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "harness", "clean"], cwd=REPO,
                         env=_env(runtime), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def _switch_alive(pid: int) -> bool:
    return network._exe(pid) is not None and Path(network._exe(pid)).name == "vde_switch"


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # the holder this test started
    proc.wait()
    proc.stdout.close()


def _gone(pid: int, patience: float = 10.0) -> bool:
    deadline = time.monotonic() + patience
    while _switch_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _switch_alive(pid)


def test_a_killed_runs_switch_ends_with_it_and_clean_removes_its_folder(runtime):
    holder, held = _hold(runtime)
    assert _switch_alive(held["pid"]) and Path(held["dir"], "ctl").is_socket()
    _kill(holder)
    assert _gone(held["pid"])  # end of file on its stdin: the switch went with its run
    _clean(runtime)
    assert not Path(held["run_dir"]).exists()


def test_a_switch_that_outlived_its_run_is_stopped_by_clean(runtime):
    holder, held = _hold(runtime, "--leak")
    try:
        _kill(holder)
        time.sleep(1)
        assert _switch_alive(held["pid"])  # a leftover child holds its stdin open
        out = _clean(runtime)
        assert not _switch_alive(held["pid"])
        assert not Path(held["dir"]).exists() and not Path(held["run_dir"]).exists()
        assert f"switch c0 (vde_switch pid {held['pid']})" in out
    finally:
        os.kill(held["leak"], signal.SIGKILL)  # the child the holder started for this test
        if _switch_alive(held["pid"]):
            os.kill(held["pid"], signal.SIGKILL)


def test_a_live_runs_switch_survives_clean(runtime):
    holder, held = _hold(runtime)
    try:
        _clean(runtime)
        assert _switch_alive(held["pid"])
        assert Path(held["dir"], "ctl").is_socket()
        assert list(Path(held["run_dir"]).glob("switch-*.json"))
    finally:
        _kill(holder)
    assert _gone(held["pid"])
    _clean(runtime)


def _point_record_at(run_dir: str, pid: int, start: str) -> None:
    record = next(Path(run_dir).glob("switch-*.json"))
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "pid": pid, "start": start}))


def test_a_record_whose_pid_now_runs_another_program_is_left_alone(runtime):
    """A dead run's record naming a pid that now runs something else, born at the
    recorded time (a recycled pid): clean must not signal it. A `sleep` stands in."""
    holder, held = _hold(runtime)
    other = subprocess.Popen(["sleep", "600"])
    try:
        _kill(holder)
        assert _gone(held["pid"])
        _point_record_at(held["run_dir"], other.pid, network._start_time(other.pid))
        _clean(runtime)
        assert other.poll() is None  # not signalled
        assert not Path(held["run_dir"]).exists()
    finally:
        other.kill()  # the sleep this test started
        other.wait()


def test_a_record_whose_pid_is_another_runs_switch_is_left_alone(runtime):
    """The same program, another start time: a live run's switch that got the pid."""
    holder, held = _hold(runtime)
    live, live_held = _hold(runtime)
    try:
        _kill(holder)
        assert _gone(held["pid"])
        _point_record_at(held["run_dir"], live_held["pid"], "1")
        _clean(runtime)
        assert _switch_alive(live_held["pid"])
        assert not Path(held["run_dir"]).exists()
    finally:
        _kill(live)
    assert _gone(live_held["pid"])

"""tools/teststreams.py runs `make test`'s VM streams two at a time and fails when one
fails. Real processes stand in for pytest here, each printing a
pytest-like last line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from harness.paths import REPO
from harness.vm import accel
from tools import teststreams


@dataclass(frozen=True)
class Sleeper(teststreams.Stream):
    code: int = 0

    def command(self) -> list[str]:
        return [sys.executable, "-c",
                f"import time; time.sleep(1); print('== 1 passed in 1s =='); exit({self.code})"]


@pytest.fixture(autouse=True)
def artifacts_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(teststreams, "ARTIFACTS", tmp_path)


# A stream that logs its start and end, and ends only once `partners` streams have
# started: on two lanes, streams 0 and 1 wait for each other, then 2 and 3. One lane
# too few and a stream waits for a partner that never starts (it gives up after two
# minutes, exit 1); too many, and more than two run at once.
PAIRED = """
import pathlib, sys, time
events, name, partners = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def log(what):
    with events.open("a") as f:
        f.write(f"{what} {name}\\n")
log("start")
for _ in range(1200):
    if events.read_text().count("start ") >= partners:
        break
    time.sleep(0.1)
else:
    sys.exit(1)
log("end")
print("== 1 passed in 1s ==")
"""


@dataclass(frozen=True)
class Paired(teststreams.Stream):
    events: str = ""
    partners: int = 0

    def command(self) -> list[str]:
        return [sys.executable, "-c", PAIRED, self.events, self.name, str(self.partners)]


def _most_at_once(events: list[str]) -> int:
    running = most = 0
    for line in events:
        running += 1 if line.startswith("start ") else -1
        most = max(most, running)
    return most


def test_streams_run_two_at_a_time_and_each_reports_its_summary(tmp_path, capsys):
    events = tmp_path / "events"
    streams = [Paired(f"d{i}", "refos", (), events=str(events), partners=2 * (i // 2 + 1))
               for i in range(4)]
    done = teststreams.run(streams, lanes=2)
    assert teststreams.report(done)
    log = events.read_text().splitlines()
    assert _most_at_once(log) == 2, log
    assert sorted(log[:2]) == ["start d0", "start d1"], log  # the first two, together
    table = capsys.readouterr().out.split("== VM test streams")[1].splitlines()
    assert sorted(line.split()[0] for line in table if "1 passed in 1s" in line) == [
        "d0", "d1", "d2", "d3"]


def test_one_failed_stream_fails_the_run_and_shows_its_log(capsys):
    streams = [Sleeper("good", "refos", ()), Sleeper("bad", "refos", (), code=1)]
    done = teststreams.run(streams, lanes=2)
    assert not teststreams.report(done)
    assert "bad failed (exit 1)" in capsys.readouterr().out
    assert {s.name: code for s, (code, _) in done.items()} == {"good": 0, "bad": 1}


# A stream that records SIGTERM in a file and takes a second to "remove its
# machines", as a pytest session does; without SIGTERM it would run for a minute.
_PATIENT = """
import pathlib, signal, sys, time
def stop(*_):
    time.sleep(1)
    pathlib.Path(sys.argv[1]).write_text("unwound")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
time.sleep(60)
"""

# `make test`'s own entry point, with two patient streams for the real ones.
_PARENT = """
import sys
from tools import teststreams as t
class Patient(t.Stream):
    def command(self):
        return [sys.executable, "-c", PATIENT, f"{t.ARTIFACTS}/{self.name}.mark"]
PATIENT, t.ARTIFACTS = sys.argv[1], t.Path(sys.argv[2])
t.STREAMS = (Patient("a", "refos", ()), Patient("b", "refos", ()))
sys.argv = [sys.argv[0], "--lanes=2"]
sys.exit(t.main())
"""


def test_sigterm_stops_the_running_streams_and_waits_for_them(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _PATIENT, str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        logs = [tmp_path / "test-a.log", tmp_path / "test-b.log"]
        deadline = time.monotonic() + 30
        while not all(log.exists() and "started" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "the streams did not start"
            time.sleep(0.1)
        parent.send_signal(signal.SIGTERM)
        out, _ = parent.communicate(timeout=30)
    finally:  # streams a broken run left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 130, out
    # Each stream got SIGTERM, and the run waited for it to finish unwinding.
    assert (tmp_path / "a.mark").read_text() == "unwound", out
    assert (tmp_path / "b.mark").read_text() == "unwound", out
    assert "interrupted; stopping a, b" in out


def test_lanes_are_one_per_core_unless_memory_holds_fewer_guests():
    streams = [teststreams.Stream(f"s{i}", "refos", ()) for i in range(5)]
    cost = accel.guest_cost_mib(1024, "tcg")
    assert teststreams.lanes_that_fit(streams, cores=2, free_mib=100_000, margin_mib=0) == 2
    free = 3 * cost + 100
    assert free > 4 * 1024  # counted at their RAM alone, four guests would have fitted
    assert teststreams.lanes_that_fit(streams, cores=8, free_mib=free, margin_mib=0) == 3
    assert teststreams.lanes_that_fit(streams, cores=2, free_mib=10, margin_mib=0) == 1


def test_a_cluster_streams_memory_counts_all_its_members():
    cost = accel.guest_cost_mib(1024, "tcg")
    single = [teststreams.Stream("a", "refos", ()), teststreams.Stream("b", "refos", ())]
    cluster = [teststreams.Stream("a", "refos", ()),
               teststreams.Stream("c", "refos", (), guests=3)]
    free = 3 * cost + 100  # three guests: two single streams, or the cluster alone
    assert teststreams.lanes_that_fit(single, cores=2, free_mib=free, margin_mib=0) == 2
    assert teststreams.lanes_that_fit(cluster, cores=2, free_mib=free, margin_mib=0) == 1
    assert any(s.guests > 1 and teststreams.CLUSTER in s.paths
               for s in teststreams.STREAMS)

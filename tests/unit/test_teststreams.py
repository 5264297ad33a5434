"""tools/teststreams.py runs `make test`'s VM streams two at a time and fails when one
fails. Real processes stand in for pytest here: each sleeps a second and prints a
pytest-like last line."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import pytest

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


def test_streams_run_two_at_a_time_and_each_reports_its_summary(capsys):
    streams = [Sleeper(f"d{i}", "refos", ()) for i in range(4)]
    started = time.monotonic()
    done = teststreams.run(streams, lanes=2)
    took = time.monotonic() - started
    assert 2 <= took < 3.8, f"4 one-second streams on 2 lanes took {took:.1f}s"
    assert teststreams.report(done)
    table = capsys.readouterr().out.split("== VM test streams")[1].splitlines()
    assert sorted(line.split()[0] for line in table if "1 passed in 1s" in line) == [
        "d0", "d1", "d2", "d3"]


def test_one_failed_stream_fails_the_run_and_shows_its_log(capsys):
    streams = [Sleeper("good", "refos", ()), Sleeper("bad", "refos", (), code=1)]
    done = teststreams.run(streams, lanes=2)
    assert not teststreams.report(done)
    assert "bad failed (exit 1)" in capsys.readouterr().out
    assert {s.name: code for s, (code, _) in done.items()} == {"good": 0, "bad": 1}

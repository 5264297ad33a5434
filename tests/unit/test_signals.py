"""SIGTERM reaches the main thread's wait even when the kernel hands it to another
thread. CI saw `make bench`'s two parallel boots ignore SIGTERM for 140 s: the main
thread sat in `Thread.join()`, and Python runs signal handlers only in the main
thread, between bytecodes. Here the main thread blocks SIGTERM, so the kernel must
deliver it to the worker, which is what happened by chance in CI."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import signals
from tests.helpers import REPO

CHILD = """
import signal, threading
from types import SimpleNamespace
from harness.signals import unwind_on_sigterm, wait_interruptibly
from tools import bench
stop = threading.Event()  # a machine's destroy() ends its boot thread
ended_by = []  # the worker's end: "destroy", or "itself" after a long boot
worker = threading.Thread(daemon=True, target=lambda: ended_by.append(
    "destroy" if stop.wait(90) else "itself"))
machine = SimpleNamespace(name="m", destroy=stop.set)
worker.start()
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})  # only the worker takes it
try:
    with unwind_on_sigterm():
        print("waiting", flush=True)
        {wait}
except KeyboardInterrupt:
    print("interrupted; worker", "running" if worker.is_alive() else ended_by[0], flush=True)
    raise
"""
WAITS = {
    "bench_parallel_boots":
        "bench.join_or_stop(SimpleNamespace(machines=[machine]), [worker], ['m'])",
    "matrix_distros_wait": "wait_interruptibly(lambda: not worker.is_alive())",
}


@pytest.mark.parametrize("waiter", sorted(WAITS))
def test_sigterm_taken_by_another_thread_ends_the_main_threads_wait_at_once(waiter):
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(wait=WAITS[waiter])], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "waiting", proc.stderr.read()
        os.kill(proc.pid, signal.SIGTERM)  # the process this test started
        out, err = proc.communicate(timeout=180)
        # The wait ended on SIGTERM, before the worker's own end: the worker was
        # still running, or stopped by the interrupt's destroy(), not done by itself.
        assert out.strip() in ("interrupted; worker running",
                               "interrupted; worker destroy"), out + err
        assert "KeyboardInterrupt" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# A child that says when SIGTERM came, then takes `unwind` seconds to clean up (as a
# pytest run removes its machines), or never ends (unwind < 0: it ignores SIGTERM).
PATIENT = """
import pathlib, signal, sys, time
mark, unwind = pathlib.Path(sys.argv[1]), float(sys.argv[2])
def on_term(*_):
    mark.write_text("term")
    if unwind >= 0:
        time.sleep(unwind)
        mark.write_text("term, unwound")
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def _patient(tmp_path, name: str, unwind: float) -> tuple[subprocess.Popen, Path]:
    mark = tmp_path / name
    child = subprocess.Popen([sys.executable, "-c", PATIENT, str(mark), str(unwind)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child, mark


def test_stop_sends_sigterm_then_waits_for_children_to_unwind(tmp_path):
    children = [_patient(tmp_path, f"c{i}", unwind=0.5) for i in range(2)]
    signals.stop([c for c, _ in children], grace_s=120)
    for child, mark in children:
        assert child.returncode == 0, "killed, or not waited for"
        assert mark.read_text() == "term, unwound"


def test_stop_kills_a_child_that_outlives_the_grace_after_sigterm(tmp_path):
    stubborn, mark = _patient(tmp_path, "stubborn", unwind=-1)
    try:
        signals.stop([stubborn], grace_s=3)
        assert mark.read_text() == "term", "SIGTERM did not come first"
        assert stubborn.returncode == -signal.SIGKILL
    finally:  # not left behind when stop() is broken
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()


def test_stop_leaves_a_child_that_already_ended_alone(tmp_path):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    signals.stop([done])
    assert done.returncode == 0


def test_an_interrupted_run_child_is_stopped_and_waited_for(tmp_path):
    """bench's children: Ctrl-C (or SIGTERM) while waiting stops the child too."""
    mark = tmp_path / "child"
    code = f"""
import pathlib, signal, sys, threading, time
from harness import signals
def interrupt():  # Ctrl-C once the child is up
    while not pathlib.Path({str(mark)!r} + ".up").exists():
        time.sleep(0.05)
    signal.raise_signal(signal.SIGINT)
threading.Thread(target=interrupt, daemon=True).start()
try:
    signals.run_child([sys.executable, "-c", {CHILD_UP!r}, {str(mark)!r}])
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=180)
    assert out.stdout.strip() == "interrupted", out.stdout + out.stderr
    assert mark.read_text() == "term, unwound"


CHILD_UP = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
def on_term(*_):
    mark.write_text("term, unwound")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the parent takes Ctrl-C
pathlib.Path(str(mark) + ".up").write_text("")
while True:
    time.sleep(1)
"""

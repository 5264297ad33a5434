"""SIGTERM as an exception: a cancelled CI job or `kill PID` unwinds like Ctrl-C, so
every `finally` removes what it made; and the one way child processes (the matrix's
and `make test`'s pytest runs, the bench's) are stopped: SIGTERM, a wait, SIGKILL."""

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

# How long a stopped child may take to unwind (a pytest run removing its machines)
# before it is killed.
STOP_GRACE_S = 120.0


@contextlib.contextmanager
def unwind_on_sigterm():
    """SIGTERM (and SIGINT when started in the background with it ignored) raise
    KeyboardInterrupt, so every `finally` and `with Session` removes its machines."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in old:
        signal.signal(sig, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def wait_interruptibly(done: Callable[[], bool], slice_s: float = 0.2) -> None:
    """Block until `done()`, waking every `slice_s`. The kernel may hand SIGTERM to any
    thread, and Python runs its handler only in the main thread, between bytecodes: a
    main thread blocked in a plain `join()` or `Future.result()` sees it only when that
    wait ends, minutes later for a boot. (CI once saw bench's parallel boots outlive
    SIGTERM by 140 s, their guest booting on to the end: the likely cause.)"""
    while not done():
        time.sleep(slice_s)


def stop(children: Sequence[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every child still running, then wait for them all, `grace_s` in total:
    a pytest child unwinds and removes its machines. One still running after that is
    killed. Every child is reaped on return."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_child(cmd: list[str], grace_s: float = STOP_GRACE_S, **popen) -> int:
    """A child process's exit status. Interrupted (Ctrl-C, or SIGTERM under
    `unwind_on_sigterm`), the child is stopped as `stop` does and waited for
    (subprocess.run would SIGKILL it, leaving its machines to a later sweep)."""
    child = subprocess.Popen(cmd, **popen)
    try:
        wait_interruptibly(lambda: child.poll() is not None)
        return child.returncode
    except BaseException:
        stop([child], grace_s)
        raise

"""SIGTERM as an exception: a cancelled CI job or `kill PID` unwinds like Ctrl-C, so
every `finally` removes what it made."""

import contextlib
import signal
import time
from collections.abc import Callable


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

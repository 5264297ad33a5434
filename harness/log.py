"""Timed, nested log lines: every long step says when it starts and how long it took."""

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("harness")


@contextlib.contextmanager
def step(what: str, who: str = "harness") -> Iterator[None]:
    """Log `who: what` before and after, with the duration; failures say so too."""
    log.info("%s: %s ...", who, what)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        log.info("%s: %s failed after %.1fs", who, what, time.monotonic() - start)
        raise
    log.info("%s: %s done in %.1fs", who, what, time.monotonic() - start)


def setup_cli_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)

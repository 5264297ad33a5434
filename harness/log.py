"""Timed, nested log lines: every long step says when it starts and how long it took."""

import contextlib
import logging
import re
import time
from collections.abc import Iterator

log = logging.getLogger("harness")

# `scheme://user:password@host`: a mirror's credentials. For http(s) the whole userinfo
# goes (a token is often given as the user name); elsewhere (qemu+ssh://root@host)
# only a password, since the user name tells where a run went.
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^/?#@\s]*)@", re.I)


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***."""
    def hide(m: re.Match) -> str:
        scheme, info = m.group(1), m.group(2)
        if scheme.lower() in ("http://", "https://"):
            return f"{scheme}***@"
        user, sep, _ = info.partition(":")
        return f"{scheme}{user}:***@" if sep else m.group(0)
    return _USERINFO.sub(hide, text)


class _Redact(logging.Filter):
    """No log line of the harness carries a URL's password, wherever it was formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "@" in text and (clean := redact(text)) != text:
            record.msg, record.args = clean, ()
        return True


log.addFilter(_Redact())


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

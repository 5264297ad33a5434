"""Every HARNESS_* environment variable, read and validated in one place.

A setting is data: its name, its type, its default and what it means. A bad
value is a `SettingError` naming the variable and what it expects, raised when
the value is read, and by `check()` when a session or the CLI starts, so a typo
in a CI file fails at once instead of as a strange timeout an hour later.
"""

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class SettingError(ValueError):
    """A HARNESS_* variable holds a value the harness cannot use."""


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], object]
    default: object
    help: str


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a number, zero or more")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number, zero or more")
    return value


def _at_most(parse: Callable[[str], float], high: float, unit: str) -> Callable[[str], float]:
    """`parse` with an upper bound: a huge value (1e308) would pass as a number and
    overflow later, in a sleep or a socket timeout, far from the setting."""
    def bounded(text: str) -> float:
        value = parse(text)
        if value > high:
            raise ValueError(f"must be at most {high:g} {unit}")
        return value
    return bounded


def _absolute_path(text: str) -> Path:
    path = _path(text)
    if not path.is_absolute():
        raise ValueError("must be an absolute path (a relative one would depend on the "
                         "folder the harness is started from); use an absolute path")
    return path


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return text == "1"


def _path(text: str) -> Path:
    if not text or "\0" in text:
        raise ValueError("must be a path")
    return Path(text)


def _word(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._,-]*", text):
        raise ValueError("must be a name such as refos (letters, digits, . _ - and ,)")
    return text


SETTINGS = {s.name: s for s in (
    Setting("HARNESS_DISTRO", _word, "refos", "the default --distro"),
    Setting("HARNESS_CACHE", _absolute_path, None, "image and save cache (default: XDG cache)"),
    Setting("HARNESS_RUNTIME", _path, None, "per-run files (default: XDG runtime dir)"),
    Setting("HARNESS_TIMEOUT_SCALE", _at_most(_positive_float, 100, "times"), 1.0,
            "multiplies every timeout (a slow CI host)"),
    Setting("HARNESS_FETCH_ATTEMPTS", _at_most(_positive_int, 100, "attempts"),
            5, "download attempts per URL"),
    Setting("HARNESS_FETCH_BACKOFF", _at_most(_non_negative_float, 3600, "seconds"),
            1.0, "first retry delay, seconds"),
    Setting("HARNESS_FETCH_MAX_BACKOFF", _at_most(_non_negative_float, 3600, "seconds"),
            30.0, "longest retry delay"),
    Setting("HARNESS_FETCH_CONNECT_TIMEOUT", _at_most(_positive_float, 3600, "seconds"),
            10.0, "seconds to connect"),
    Setting("HARNESS_FETCH_READ_TIMEOUT", _at_most(_positive_float, 3600, "seconds"),
            60.0, "seconds between bytes"),
    Setting("HARNESS_MIRRORS", str, "",
            "HOST=URL mirrors of catalog hosts, separated by commas or spaces"),
    Setting("HARNESS_ALLOW_INSECURE_HTTP", _flag, False,
            "1 accepts a digest read over plain HTTP (logged each time)"),
    Setting("HARNESS_IMAGE_MAX_MIB", _at_most(_positive_int, 2**22, "MiB (4 TiB)"), 32768,
            "the largest image an archive may unpack to, in MiB"),
    Setting("HARNESS_SAVE_CACHE_MAX_MIB", _at_most(_non_negative_int, 2**22, "MiB (4 TiB)"), 8192,
            "MiB of saved machines kept across runs (least recently used go first); "
            "0 keeps none"),
    Setting("HARNESS_BENCH_DISTRO", _word, "refos", "the distro `make bench` boots"),
)}
# HARNESS_IMAGE_<DISTRO> (or a catalog entry's own `image.env`) names a local image file;
# the settings above take precedence over that prefix (HARNESS_IMAGE_MAX_MIB).
IMAGE_PREFIX = "HARNESS_IMAGE_"
# Variables the harness sets for its own child processes or tests, not for users.
INTERNAL = ("HARNESS_TEST_HOLD",)


def get(name: str):
    """The value of setting `name`: parsed from the environment, or its default."""
    setting = SETTINGS[name]
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return setting.default
    try:
        return setting.parse(raw)
    except ValueError as e:
        raise SettingError(f"{name}={raw!r}: {e} ({setting.help})") from None


def check() -> list[str]:
    """Read every HARNESS_* variable once; refuse unknown names and bad values. Returns
    the HARNESS_IMAGE_<DISTRO> names, which only the catalog can check
    (harness.images.check_settings)."""
    images = []
    for name in sorted(os.environ):
        if not name.startswith("HARNESS_"):
            continue
        if name in SETTINGS:
            get(name)
        elif name.startswith(IMAGE_PREFIX):
            images.append(name)
        elif name not in INTERNAL:
            known = ", ".join([*SETTINGS, IMAGE_PREFIX + "<DISTRO>"])
            raise SettingError(f"{name} is not a harness setting; known: {known}")
    return images

"""Download an image into the cache, verified and resumable.

The cache follows Lima: one directory per URL, named by the SHA-256 of the URL,
holding `url`, `data` and `digest` ("<algorithm>:<hex>" of `data`). A download
streams into `data.partial`, hashing as it goes; an interrupted one resumes with
an HTTP Range request. `data` appears, by rename, only once its digest matched,
so a file in the cache is always a verified one. A lock beside each directory
makes two processes that want the same URL download it once.

Only transient failures are retried (connection reset, timeout, 5xx), with
exponential backoff; a 404 or a digest mismatch fails at once.
"""

import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests
import tenacity
import urllib3

from harness import settings
from harness.log import log
from harness.paths import cache_dir

CHUNK = 1024 * 1024
ALGORITHMS = ("sha256", "sha512", "sha1")


class FetchError(RuntimeError):
    """The image could not be fetched; the message says why."""


class NotCached(FetchError):
    """Offline, and the cache lacks the image."""


class NotFound(FetchError):
    """The server says the file does not exist (404, 410): retrying cannot help."""


class DigestMismatch(FetchError):
    """The bytes are not the ones the catalog promises; nothing was cached."""


class Transient(FetchError):
    """A failure worth retrying: the next attempt may well succeed."""


TRANSIENT = (requests.ConnectionError, requests.Timeout,
             requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
             urllib3.exceptions.ReadTimeoutError, ConnectionError, TimeoutError, Transient)


@dataclass(frozen=True)
class Policy:
    """Retry and timeout settings; the environment overrides them (tests make them short)."""

    attempts: int = 5
    backoff: float = 1.0  # first wait in seconds, doubled each retry
    max_backoff: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls) -> "Policy":
        """The defaults above, overridden by the HARNESS_FETCH_* settings."""
        return cls(attempts=settings.get("HARNESS_FETCH_ATTEMPTS"),
                   backoff=settings.get("HARNESS_FETCH_BACKOFF"),
                   max_backoff=settings.get("HARNESS_FETCH_MAX_BACKOFF"),
                   connect_timeout=settings.get("HARNESS_FETCH_CONNECT_TIMEOUT"),
                   read_timeout=settings.get("HARNESS_FETCH_READ_TIMEOUT"))


@dataclass(frozen=True)
class Source:
    """What to fetch: mirrors in order, and how to know the right bytes."""

    urls: tuple[str, ...]
    digest: str = ""  # "<algorithm>:<hex>", when known up front
    checksum_url: str = ""  # else an upstream checksum file naming the file
    checksum_algorithm: str = ""
    version: str = ""  # the concrete version, for the record


@dataclass(frozen=True)
class Fetched:
    path: Path
    digest: str
    url: str
    version: str = ""
    downloaded: bool = False  # False when the cache already had it
    seconds: float = 0.0
    size: int = field(default=0)


def download_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "download" / "by-url-sha256"


def url_dir(url: str, cache: Path | None = None) -> Path:
    return download_dir(cache) / hashlib.sha256(url.encode()).hexdigest()


def cached(url: str, cache: Path | None = None) -> tuple[Path, str] | None:
    """The verified file for `url` and its digest, if the cache has them."""
    d = url_dir(url, cache)
    if (d / "data").is_file() and (d / "digest").is_file():
        return d / "data", (d / "digest").read_text().strip()
    return None


def fetch(source: Source, offline: bool = False, policy: Policy | None = None,
          cache: Path | None = None, label: str = "") -> Fetched:
    """The verified file for `source`, from the cache or downloaded into it."""
    if not source.urls:
        raise FetchError(f"{label}: no URL to fetch")
    if hit := _cache_hit(source, cache):
        return hit
    if offline:
        raise NotCached(f"{label or source.urls[0]}: not in the cache (offline); looked for "
                        + ", ".join(source.urls))
    policy = policy or Policy.from_env()
    failures = []
    with requests.Session() as session:
        for url in source.urls:
            try:
                return _fetch_url(url, source, policy, session, cache, label)
            except (NotFound, Transient, *TRANSIENT) as e:
                failures.append(f"{url}: {e}")
                log.warning("fetch: %s failed: %s", url, e)
    raise FetchError(f"{label}: every URL failed:\n  " + "\n  ".join(failures))


def _cache_hit(source: Source, cache: Path | None) -> Fetched | None:
    for url in source.urls:
        if found := cached(url, cache):
            path, digest = found
            if source.digest and digest != source.digest:
                log.info("fetch: cached %s has %s, catalog pins %s: fetching again",
                         url, digest, source.digest)
                continue
            log.info("fetch: cached %s (%s)", path, digest)
            return Fetched(path, digest, url, source.version, size=path.stat().st_size)
    return None


def _fetch_url(url: str, source: Source, policy: Policy, session: requests.Session,
               cache: Path | None, label: str) -> Fetched:
    d = url_dir(url, cache)
    d.parent.mkdir(parents=True, exist_ok=True)
    with _locked(d.with_suffix(".lock")):
        if found := cached(url, cache):  # another process fetched it while we waited
            path, digest = found
            if not source.digest or digest == source.digest:
                return Fetched(path, digest, url, source.version, size=path.stat().st_size)
        expected = source.digest or _expected_from_checksums(url, source, policy, session)
        d.mkdir(exist_ok=True)
        (d / "url").write_text(url + "\n")
        started = time.monotonic()
        got = _download(url, d / "data.partial", expected.split(":", 1)[0], policy, session,
                        label or Path(url).name)
        if got != expected:
            (d / "data.partial").unlink(missing_ok=True)
            shutil.rmtree(d, ignore_errors=True)
            raise DigestMismatch(f"{url}: digest mismatch: expected {expected}, got {got}; "
                                 "nothing was cached")
        (d / "digest").write_text(got + "\n")
        (d / "data.partial").rename(d / "data")
        seconds = time.monotonic() - started
        return Fetched(d / "data", got, url, source.version, True, seconds,
                       (d / "data").stat().st_size)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock: the kernel drops it when the holder dies."""
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("fetch: waiting for another process downloading the same file (%s)", path)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _retrying(policy: Policy, what: str) -> tenacity.Retrying:
    def say(state: tenacity.RetryCallState) -> None:
        log.warning("fetch: %s: %s; retry %d of %d in %.1fs", what,
                    state.outcome.exception(), state.attempt_number, policy.attempts - 1,
                    state.next_action.sleep if state.next_action else 0)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TRANSIENT),
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential(multiplier=policy.backoff, max=policy.max_backoff),
        before_sleep=say, reraise=True)


def _download(url: str, partial: Path, algorithm: str, policy: Policy,
              session: requests.Session, label: str) -> str:
    """Stream `url` into `partial`, resuming it; return the digest of the whole file."""
    for attempt in _retrying(policy, url):
        with attempt:
            return _stream(url, partial, algorithm, policy, session, label)
    raise AssertionError("unreachable")  # tenacity either returns or raises


def _stream(url: str, partial: Path, algorithm: str, policy: Policy,
            session: requests.Session, label: str) -> str:
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = (policy.connect_timeout, policy.read_timeout)
    with session.get(url, stream=True, headers=headers, timeout=timeout) as r:
        _check_status(r, url)
        if r.status_code == 416:  # the partial file is not a prefix of this one
            partial.unlink()
            raise Transient("the server refused to resume (416); starting over")
        resumed = r.status_code == 206
        h = _hash_file(partial, algorithm) if resumed else hashlib.new(algorithm)
        if offset and not resumed:
            log.info("fetch: %s ignores Range requests; starting over", url)
        start = offset if resumed else 0
        length = int(r.headers.get("Content-Length", -1))
        total = start + length if length >= 0 else None
        with open(partial, "ab" if resumed else "wb") as f, \
                Progress(label, total, start) as progress, \
                ThreadPoolExecutor(1) as hasher:
            # read1 hands over what has arrived, so bytes before a dropped connection are
            # kept for the resume; the file's bytes are hashed as sent (no decoding).
            # Hashing one chunk overlaps receiving the next (hashlib releases the GIL).
            hashing = None
            while chunk := r.raw.read1(CHUNK, decode_content=False):
                f.write(chunk)
                if hashing:
                    hashing.result()
                hashing = hasher.submit(h.update, chunk)
                progress.add(len(chunk))
            if hashing:
                hashing.result()
        if total is not None and partial.stat().st_size != total:
            raise Transient(f"connection closed after {partial.stat().st_size} of {total} bytes")
    return f"{algorithm}:{h.hexdigest()}"


def _check_status(r: requests.Response, url: str) -> None:
    if r.status_code in (404, 410):
        raise NotFound(f"{url}: HTTP {r.status_code} {r.reason}")
    if r.status_code >= 500 or r.status_code == 429:
        raise Transient(f"HTTP {r.status_code} {r.reason}")
    if r.status_code >= 400 and r.status_code != 416:
        raise FetchError(f"{url}: HTTP {r.status_code} {r.reason}")


def _hash_file(path: Path, algorithm: str):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{_hash_file(path, algorithm).hexdigest()}"


# -- checksum files ---------------------------------------------------------------------

def _expected_from_checksums(url: str, source: Source, policy: Policy,
                             session: requests.Session) -> str:
    if not source.checksum_url:
        raise FetchError(f"{url}: no digest to verify against: pin `digest` in the catalog, "
                         "or give a checksum file")
    text = get_text(source.checksum_url, policy, session)
    algorithm = source.checksum_algorithm or "sha256"
    return f"{algorithm}:{parse_checksums(text, Path(url).name, algorithm, source.checksum_url)}"


def get_text(url: str, policy: Policy, session: requests.Session | None = None) -> str:
    """A small text file (checksums, stream metadata), with the same retry rules."""
    session = session or requests.Session()
    timeout = (policy.connect_timeout, policy.read_timeout)
    for attempt in _retrying(policy, url):
        with attempt:
            r = session.get(url, timeout=timeout)
            _check_status(r, url)
            return r.text
    raise AssertionError("unreachable")


def parse_checksums(text: str, filename: str, algorithm: str, where: str = "") -> str:
    """The hex digest for `filename` in a checksum file.

    Reads the layouts distros publish: `HEX  name` (coreutils), `SHA256 (name) = HEX`
    (BSD, Fedora), `sha256: HEX name`, and Flatcar's DIGESTS, which lists md5, sha1 and
    sha512 for each file: the digest is told apart by its length.
    """
    width = hashlib.new(algorithm).digest_size * 2
    hexes = re.compile(rf"\b[0-9a-fA-F]{{{width}}}\b")
    name = re.compile(rf"(^|[\s(*/]){re.escape(filename)}($|[\s)])")
    found = {m.lower() for line in text.splitlines() if name.search(line)
             for m in hexes.findall(line)}
    if len(found) != 1:
        what = "no" if not found else "more than one"
        raise FetchError(f"{where}: {what} {algorithm} digest for {filename}")
    return found.pop()


# -- progress ---------------------------------------------------------------------------

class Progress:
    """One line on stderr: bytes, rate and elapsed time; redrawn in place on a terminal."""

    def __init__(self, label: str, total: int | None, start: int = 0,
                 stream: IO[str] | None = None):
        self.label, self.total, self.done, self.start = label, total, start, start
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.began = self.last = time.monotonic()

    def __enter__(self) -> "Progress":
        return self

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= (0.2 if self.tty else 5.0):
            self.last = now
            self._draw(now)

    def __exit__(self, *exc) -> None:
        self._draw(time.monotonic(), final=True)

    def _draw(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.began, 1e-6)
        rate = (self.done - self.start) / elapsed
        size = f"{self.done / 2**20:.1f}"
        if self.total:
            size += f" / {self.total / 2**20:.1f} MiB ({100 * self.done / self.total:.0f}%)"
        else:
            size += " MiB"
        line = f"fetch {self.label}: {size}  {rate / 2**20:.1f} MiB/s  {elapsed:.1f}s"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r\033[K" if self.tty else "") + line + end)
        self.stream.flush()


# -- resolved versions, kept so offline runs and reports know them ----------------------

def record_resolution(name: str, data: dict, cache: Path | None = None) -> None:
    d = (cache or cache_dir()) / "download" / "resolved"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.rename(d / f"{name}.json")


def last_resolution(name: str, cache: Path | None = None) -> dict | None:
    p = (cache or cache_dir()) / "download" / "resolved" / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None

"""Download an image into the cache, verified and resumable.

The cache follows Lima: one directory per URL, named by the SHA-256 of the URL,
holding `url`, `data` and `digest` ("<algorithm>:<hex>" of `data`). A download
streams into `data.partial`, hashing as it goes; an interrupted one resumes with
an HTTP Range request. `data` appears, by rename, only once its digest matched,
so a file in the cache is always a verified one; `verified.json` records its
size and mtime then, and a cache hit whose file differs from that record is
hashed again. A lock beside each directory makes two processes that want the
same URL download it once.

Only transient failures are retried (connection reset, timeout, 5xx), with
exponential backoff; a 403, 404 or a digest mismatch fails at once and the next
URL is tried.

Where the bytes come from is separate from what they are: the catalog URL keeps
naming the cache entry, while a mirror of its host (HARNESS_MIRRORS or
`--mirror HOST=URL`) or an import folder (`harness fetch --import DIR`) may
serve it; the log says which. A digest is trusted when the catalog pins it, when
it was read over HTTPS, or when the vendor's GPG signature (over the checksum
file, or over the image) verifies against the key kept in the repo. A digest
read over plain HTTP is refused unless the user opts in
(HARNESS_ALLOW_INSECURE_HTTP=1), and the log says so each time.
"""

import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests
import tenacity
import urllib3

from harness import settings
from harness.images import signature
from harness.log import log
from harness.paths import cache_dir

# Up to 8 MiB per read (read1 returns what has arrived, at most this). On 127.0.0.1
# fewer, larger reads took the fetch of 256 MiB from 0.29 s to 0.21 s, curl 0.24 s
# (best of 15, make bench's server). Two chunks are in memory at once.
CHUNK = 8 * 1024 * 1024
ALGORITHMS = ("sha256", "sha512", "sha1")
SCHEMES = ("http", "https")


class FetchError(RuntimeError):
    """The image could not be fetched; the message says why, and `kind` what failed in
    a word the user can act on (DNS, TLS, HTTP 404, digest, signature, ...)."""

    kind = "error"

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        if kind:
            self.kind = kind


class NotCached(FetchError):
    """Offline, and the cache lacks the image."""

    kind = "not cached (offline)"


class NotFound(FetchError):
    """The server says the file is not there for us (403, 404, 410): retrying cannot help."""


class DigestMismatch(FetchError):
    """The bytes are not the ones the catalog promises; nothing was cached."""

    kind = "digest"


class SignatureError(FetchError):
    """The vendor's signature did not verify against the key kept in the repo."""

    kind = "signature"


class Insecure(FetchError):
    """The digest would rest on bytes read over plain HTTP, and nobody opted in."""

    kind = "plain HTTP"


class Transient(FetchError):
    """A failure worth retrying: the next attempt may well succeed."""


class AllFailed(FetchError):
    """Every URL failed; `failures` keeps each URL's own error."""

    def __init__(self, label: str, failures: list[tuple[str, FetchError]]):
        self.failures = failures
        lines = "\n  ".join(str(e) for _, e in failures)
        kinds = list(dict.fromkeys(e.kind for _, e in failures))
        super().__init__(f"{label}: every URL failed:\n  {lines}", ", ".join(kinds))


TRANSIENT = (requests.ConnectionError, requests.Timeout,
             requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
             urllib3.exceptions.ReadTimeoutError, ConnectionError, TimeoutError, Transient)


def describe(e: BaseException, url: str = "") -> FetchError:
    """A FetchError for any failure of a request, classified for the user."""
    if isinstance(e, FetchError):  # already names its file
        return e
    where = f"{url}: " if url else ""
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(e, requests.exceptions.SSLError):
        return FetchError(f"{where}TLS failed: {_reason(e)}", "TLS")
    if isinstance(e, requests.Timeout | TimeoutError | urllib3.exceptions.ReadTimeoutError):
        return FetchError(f"{where}timed out: {_reason(e)}", "timeout")
    if isinstance(e, requests.exceptions.InvalidSchema | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidURL):
        return FetchError(f"{where}not an http(s) URL: {e}", "URL")
    if isinstance(e, requests.ConnectionError | ConnectionError):
        if _caused_by(e, (urllib3.exceptions.NameResolutionError, socket.gaierror)):
            return FetchError(f"{where}DNS cannot resolve {host}", "DNS")
        if _caused_by(e, (ConnectionRefusedError,)):
            return FetchError(f"{where}connection refused by {host}", "connection refused")
        return FetchError(f"{where}connection failed: {_reason(e)}", "connection")
    if isinstance(e, requests.exceptions.ChunkedEncodingError
                  | urllib3.exceptions.ProtocolError):
        return FetchError(f"{where}connection dropped: {_reason(e)}", "connection dropped")
    return FetchError(f"{where}{e}")


def _worth_retrying(e: BaseException) -> bool:
    """Transient failures, but not a name that DNS says does not exist."""
    return isinstance(e, TRANSIENT) and not _caused_by(
        e, (socket.gaierror,), lambda g: g.errno == socket.EAI_NONAME)


def _caused_by(e: BaseException, types: tuple[type, ...],
               test: Callable[[BaseException], bool] = lambda _: True) -> bool:
    """Whether `types` appear in e's chain (requests wraps urllib3 wraps socket errors)."""
    seen: set[int] = set()
    todo: list[object] = [e]
    while todo:
        cur = todo.pop()
        if not isinstance(cur, BaseException) or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, types) and test(cur):
            return True
        todo += [cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args]
    return False


def _reason(e: BaseException) -> str:
    reason = getattr(e.args[0], "reason", None) if e.args else None
    return str(reason or e)


def check_url(url: str) -> str:
    """Only http and https are fetched: a file:, ftp: or bare path is a clear error."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise FetchError(f"{url!r}: not an http(s) URL; the fetcher reads only http:// and "
                         "https:// (give a local file with --image PATH or "
                         "`harness fetch --import DIR`)", "URL")
    return url


def parse_mirrors(text: str) -> tuple[tuple[str, str], ...]:
    """`HOST=URL` items, separated by commas or spaces: each catalog host's new base URL."""
    out = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        host, sep, base = item.partition("=")
        if not sep or not host or "/" in host:
            raise FetchError(f"mirror {item!r}: expected HOST=URL, for example "
                             "github.com=https://mirror.example/github", "usage")
        out.append((host.lower(), check_url(base).rstrip("/")))
    return tuple(out)


@dataclass(frozen=True)
class Policy:
    """Retry, timeout and source settings; the environment overrides them (tests make
    them short)."""

    attempts: int = 5
    backoff: float = 1.0  # first wait in seconds, doubled each retry
    max_backoff: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    mirrors: tuple[tuple[str, str], ...] = ()  # (catalog host, base URL serving it)
    allow_insecure_http: bool = False  # the user's opt-in; logged at each use
    import_dir: str = ""  # files brought in by hand, looked up by their names

    @classmethod
    def from_env(cls) -> "Policy":
        """The defaults above, overridden by the HARNESS_FETCH_* settings, the
        mirrors and the plain-HTTP opt-in."""
        return cls(attempts=settings.get("HARNESS_FETCH_ATTEMPTS"),
                   backoff=settings.get("HARNESS_FETCH_BACKOFF"),
                   max_backoff=settings.get("HARNESS_FETCH_MAX_BACKOFF"),
                   connect_timeout=settings.get("HARNESS_FETCH_CONNECT_TIMEOUT"),
                   read_timeout=settings.get("HARNESS_FETCH_READ_TIMEOUT"),
                   mirrors=parse_mirrors(settings.get("HARNESS_MIRRORS")),
                   allow_insecure_http=settings.get("HARNESS_ALLOW_INSECURE_HTTP"))


@dataclass(frozen=True)
class Source:
    """What to fetch: mirrors in order, and how to know the right bytes."""

    urls: tuple[str, ...]
    digest: str = ""  # "<algorithm>:<hex>", when known up front
    checksum_url: str = ""  # else an upstream checksum file naming the file
    checksum_algorithm: str = ""
    version: str = ""  # the concrete version, for the record
    signature_url: str = ""  # a clearsigned checksum file, or a detached signature of the file
    signature_key: str = ""  # the vendor's public key, a file kept in the repo
    digest_from: str = ""  # where `digest` was read (stream metadata), when not the catalog

    def files(self) -> list[dict[str, str]]:
        """Every file a download of this source reads (for `harness fetch --urls`)."""
        out = [{"role": "image", "url": u, "digest": self.digest} for u in self.urls]
        for role, url in (("checksums", self.checksum_url), ("signature", self.signature_url),
                          ("metadata", self.digest_from)):
            if url:
                out.append({"role": role, "url": url, "digest": ""})
        return out


@dataclass(frozen=True)
class Fetched:
    path: Path
    digest: str
    url: str
    version: str = ""
    downloaded: bool = False  # False when the cache already had it
    seconds: float = 0.0
    size: int = field(default=0)
    served_from: str = ""  # the mirror URL or imported file, when not `url` itself


def download_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "download" / "by-url-sha256"


def url_dir(url: str, cache: Path | None = None) -> Path:
    return download_dir(cache) / hashlib.sha256(url.encode()).hexdigest()


def cached(url: str, cache: Path | None = None) -> tuple[Path, str] | None:
    """The verified file for `url` and its digest, if the cache holds it unchanged.

    A file whose size or mtime differ from those recorded when it was verified is
    hashed again; one that no longer matches its digest leaves the cache."""
    d = url_dir(url, cache)
    if not ((d / "data").is_file() and (d / "digest").is_file()):
        return None
    digest = (d / "digest").read_text().strip()
    if _stat_record(d / "data") == _read_record(d):
        return d / "data", digest
    if (got := _rehash(d / "data", digest)) != digest:
        log.warning("fetch: cached %s changed since it was verified (now %s, was %s): "
                    "removed from the cache", d / "data", got, digest)
        _evict(d)
        return None
    _write_record(d)
    return d / "data", digest


def _rehash(path: Path, digest: str) -> str:
    algorithm = digest.split(":", 1)[0]
    log.info("fetch: hashing %s again: its size or mtime differ from the record", path)
    return file_digest(path, algorithm if algorithm in ALGORITHMS else "sha256")


def _stat_record(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_record(d: Path) -> dict | None:
    try:
        return json.loads((d / "verified.json").read_text())
    except (OSError, ValueError):
        return None


def _write_record(d: Path) -> None:
    (d / "verified.json").write_text(json.dumps(_stat_record(d / "data")) + "\n")


def _evict(d: Path) -> None:
    for name in ("verified.json", "digest", "data"):
        (d / name).unlink(missing_ok=True)


def verify_cache(cache: Path | None = None) -> list[tuple[str, str, bool]]:
    """Hash every cached download again: (url, digest, still good); bad ones leave."""
    out = []
    root = download_dir(cache)
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not (d / "data").is_file() or not (d / "digest").is_file():
            continue
        url = (d / "url").read_text().strip() if (d / "url").is_file() else d.name
        digest = (d / "digest").read_text().strip()
        good = _rehash(d / "data", digest) == digest
        if good:
            _write_record(d)
        else:
            _evict(d)
        out.append((url, digest, good))
    return out


def fetch(source: Source, offline: bool = False, policy: Policy | None = None,
          cache: Path | None = None, label: str = "") -> Fetched:
    """The verified file for `source`, from the cache or downloaded into it."""
    if not source.urls:
        raise FetchError(f"{label}: no URL to fetch", "catalog")
    if hit := _cache_hit(source, cache):
        return hit
    if offline:
        raise NotCached(f"{label or source.urls[0]}: not in the cache (offline); looked for "
                        + ", ".join(source.urls))
    policy = policy or Policy.from_env()
    failures: list[tuple[str, FetchError]] = []
    with requests.Session() as session:
        session.headers["Accept-Encoding"] = "identity"  # the bytes as published
        for url in source.urls:
            try:
                return _fetch_url(check_url(url), source, policy, session, cache, label)
            except (FetchError, *TRANSIENT, requests.RequestException) as e:
                failures.append((url, describe(e, _where(url, policy))))
                log.warning("fetch: %s", failures[-1][1])
    if len(failures) == 1:
        raise failures[0][1]
    raise AllFailed(label, failures)


def locate(url: str, policy: Policy) -> str:
    """Where `url` is read from: the import folder, a mirror of its host, or itself."""
    parts = urllib.parse.urlsplit(url)
    if policy.import_dir:
        name = Path(parts.path).name
        if name in ("", ".", ".."):
            raise FetchError(f"{url}: no file name to look for in {policy.import_dir}", "URL")
        return str(Path(policy.import_dir) / name)
    for host, base in policy.mirrors:
        if parts.hostname and parts.hostname.lower() == host:
            return base + parts.path + (f"?{parts.query}" if parts.query else "")
    return url


def _where(url: str, policy: Policy) -> str:
    try:
        return locate(url, policy)
    except FetchError:
        return url


def secure(url: str, policy: Policy) -> bool:
    """Whether bytes for `url` come over TLS (an import is judged by the catalog's URL)."""
    where = url if policy.import_dir else locate(url, policy)
    return urllib.parse.urlsplit(where).scheme == "https"


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
        expected, image_sig = _expected(url, source, policy, session)
        d.mkdir(exist_ok=True)
        (d / "url").write_text(url + "\n")
        where = locate(url, policy)
        if where != url:
            log.info("fetch: %s is served by %s", url, where)
        started = time.monotonic()
        partial = d / "data.partial"
        got = _get(where, partial, expected, policy, session, label or Path(url).name)
        if got != expected:
            shutil.rmtree(d, ignore_errors=True)
            raise DigestMismatch(f"{where}: digest mismatch: expected {expected}, got {got}; "
                                 "nothing was cached")
        if image_sig:
            _verify_detached(image_sig, partial, source, d)
        (d / "digest").write_text(got + "\n")
        partial.rename(d / "data")
        _write_record(d)
        seconds = time.monotonic() - started
        return Fetched(d / "data", got, url, source.version, True, seconds,
                       (d / "data").stat().st_size, where if where != url else "")


def _get(where: str, partial: Path, expected: str, policy: Policy,
         session: requests.Session, label: str) -> str:
    """The digest of the file at `where`, copied into `partial`. A partial file that an
    earlier run left and that does not lead to the expected bytes is dropped once."""
    algorithm = expected.split(":", 1)[0]
    if policy.import_dir:
        return _copy_local(Path(where), partial, algorithm)
    resumed = partial.exists() and partial.stat().st_size > 0
    got = _download(where, partial, algorithm, policy, session, label)
    if got != expected and resumed:
        log.warning("fetch: %s: the partial download left earlier is not part of this "
                    "file; starting over from zero", where)
        partial.unlink(missing_ok=True)
        got = _download(where, partial, algorithm, policy, session, label)
    return got


def _copy_local(path: Path, partial: Path, algorithm: str) -> str:
    """An imported file, copied into the cache entry while it is hashed."""
    if not path.is_file():
        raise NotFound(f"{path}: not in the import folder", "missing file")
    h = hashlib.new(algorithm)
    with open(path, "rb") as fin, open(partial, "wb") as fout:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


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
        e = state.outcome.exception() if state.outcome else None
        log.warning("fetch: %s; retry %d of %d in %.1fs", describe(e, what) if e else what,
                    state.attempt_number, policy.attempts - 1,
                    state.next_action.sleep if state.next_action else 0)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_worth_retrying),
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
            raise Transient(f"{url}: the server refused to resume (416); starting over")
        resumed = r.status_code == 206
        if resumed and not offset:
            raise FetchError(f"{url}: the server answered 206 Partial Content to a request "
                             "for the whole file", "HTTP 206")
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
            raise Transient(f"{url}: connection closed after {partial.stat().st_size} of "
                            f"{total} bytes", "connection dropped")
    return f"{algorithm}:{h.hexdigest()}"


def _check_status(r: requests.Response, url: str) -> None:
    if r.status_code in (401, 403, 404, 410):  # not here for us: the next URL may have it
        raise NotFound(f"{url}: HTTP {r.status_code} {r.reason}", f"HTTP {r.status_code}")
    if r.status_code >= 500 or r.status_code == 429:
        raise Transient(f"{url}: HTTP {r.status_code} {r.reason}", f"HTTP {r.status_code}")
    if r.status_code >= 400 and r.status_code != 416:
        raise FetchError(f"{url}: HTTP {r.status_code} {r.reason}", f"HTTP {r.status_code}")


def _hash_file(path: Path, algorithm: str):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{_hash_file(path, algorithm).hexdigest()}"


# -- checksum files and signatures ------------------------------------------------------

def _expected(url: str, source: Source, policy: Policy, session: requests.Session
              ) -> tuple[str, str]:
    """The digest the file must have; and the vendor's detached signature of the file
    itself, when it signs the file rather than its checksums."""
    sig = get_text(source.signature_url, policy, session) if source.signature_url else ""
    clearsigned = signature.is_clearsigned(sig)
    if source.digest:
        expected, where = source.digest, source.digest_from
        trusted = not where or secure(where, policy)
    elif clearsigned:  # the checksum file itself, signed (Flatcar's .DIGESTS.asc)
        expected, where, trusted = _from_checksums(url, source, _signed_text(sig, source),
                                                   source.signature_url), "", True
    elif source.checksum_url:
        where = source.checksum_url
        text = get_text(where, policy, session)
        expected, trusted = _from_checksums(url, source, text, where), secure(where, policy)
    else:
        raise FetchError(f"{url}: no digest to verify against: pin `digest` in the catalog, "
                         "or give a checksum file", "catalog")
    detached = sig if sig and not clearsigned else ""
    if not trusted and not detached:
        _insecure(where, policy)
    return expected, detached


def _from_checksums(url: str, source: Source, text: str, where: str) -> str:
    algorithm = source.checksum_algorithm or "sha256"
    return f"{algorithm}:{parse_checksums(text, Path(url).name, algorithm, where)}"


def _insecure(where: str, policy: Policy) -> None:
    if not policy.allow_insecure_http:
        raise Insecure(f"{where}: the digest would be read over plain HTTP, where anyone on "
                       "the path can change it along with the image; pin `digest` in the "
                       "catalog, use an https mirror, or set HARNESS_ALLOW_INSECURE_HTTP=1 to "
                       "accept it")
    log.warning("fetch: INSECURE: trusting a digest read over plain HTTP from %s "
                "(HARNESS_ALLOW_INSECURE_HTTP=1)", where)


def _key(source: Source) -> Path:
    if not source.signature_key:
        raise SignatureError(f"{source.signature_url}: signed, but the catalog names no "
                             "signature_key to check it with")
    return Path(source.signature_key)


def _signed_text(clearsigned: str, source: Source) -> str:
    try:
        return signature.verify_clearsigned(clearsigned, _key(source))
    except signature.BadSignature as e:
        raise SignatureError(f"{source.signature_url}: {e}") from None


def _verify_detached(sig: str, data: Path, source: Source, d: Path) -> None:
    try:
        signature.verify_detached(sig, data, _key(source))
    except (signature.BadSignature, SignatureError) as e:
        shutil.rmtree(d, ignore_errors=True)
        raise SignatureError(f"{source.signature_url}: {e}; nothing was cached") from None
    log.info("fetch: signature verified: %s", source.signature_url)


def get_text(url: str, policy: Policy, session: requests.Session | None = None) -> str:
    """A small text file (checksums, signature, stream metadata), with the same retry
    rules; from the mirror or the import folder when one serves it."""
    where = locate(check_url(url), policy)
    if policy.import_dir:
        try:
            return Path(where).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise NotFound(f"{where}: cannot read it ({e})", "missing file") from None
    if where != url:
        log.info("fetch: %s is served by %s", url, where)
    session = session or requests.Session()
    timeout = (policy.connect_timeout, policy.read_timeout)
    try:
        for attempt in _retrying(policy, where):
            with attempt:
                r = session.get(where, timeout=timeout, headers={"Accept-Encoding": "identity"})
                _check_status(r, where)
                return r.text
    except (*TRANSIENT, requests.RequestException) as e:
        raise describe(e, where) from None
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
    """The version last resolved online; a damaged record is an error saying what to do."""
    p = (cache or cache_dir()) / "download" / "resolved" / f"{name}.json"
    if not p.exists():
        return None
    try:
        rec = json.loads(p.read_text())
        if not isinstance(rec, dict) or not isinstance(rec.get("urls"), list) or \
                not rec["urls"] or not all(isinstance(u, str) for u in rec["urls"]):
            raise ValueError("it lists no urls")
    except (OSError, ValueError) as e:
        raise NotCached(f"{p}: the stored version record is damaged ({e}); delete it and run "
                        f"`harness fetch {name}` where the download host is reachable",
                        "damaged record") from None
    return rec

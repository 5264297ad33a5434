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
serve it; the log says which, with any password in a URL replaced by ***.

What the bytes are checked against, the trust anchor, is said in the log and kept
in the record (`verified_by`). Anchors: the digest the catalog pins; a checksum
file clearsigned with, or an image signed by, the vendor's key kept in the repo;
a checksum file or stream metadata read over HTTPS on every hop (an https URL
that redirects to http is refused). Not anchors: a file read over plain HTTP
(refused unless HARNESS_ALLOW_INSECURE_HTTP=1, logged each time), and a checksum
file or stream metadata that came in the import folder: the folder holds
whatever was put there, so a checksum file beside the image proves nothing
about it. An import is accepted against such a file only on the user's word
(`harness fetch --import DIR --trust-import`), logged as such.

The cache is used only where this uid alone can write it (harness.safefs); a
download or import larger than the entry's max_mib (else HARNESS_IMAGE_MAX_MIB)
is cut off, and a full disk ends in one line; either way the partial file goes.
"""

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests
import tenacity
import urllib3

from harness import safefs, settings
from harness.images import signature
from harness.log import log, redact
from harness.paths import cache_dir, replace_file

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
        super().__init__(redact(message))  # a mirror's password never reaches a message
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


class TooLarge(FetchError):
    """The download or import is larger than the cap (a server that never ends, a wrong
    file): cut off, and nothing was kept."""

    kind = "too large"


class DiskFull(FetchError):
    """The cache's disk ran out of space; the partial file was removed."""

    kind = "disk full"


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
    trust_import: bool = False  # the user vouches for the import folder's checksum files

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
    max_bytes: int = 0  # the cap on the download; 0: HARNESS_IMAGE_MAX_MIB

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
    verified_by: str = ""  # the trust anchor the digest was checked against


def _root(cache: Path | None) -> Path:
    return Path(cache or cache_dir())


def download_dir(cache: Path | None = None) -> Path:
    return _root(cache) / "download" / "by-url-sha256"


def url_dir(url: str, cache: Path | None = None) -> Path:
    return download_dir(cache) / hashlib.sha256(url.encode()).hexdigest()


def recorded(url: str, cache: Path | None = None) -> tuple[Path, str] | None:
    """The cached file for `url` and the digest recorded when it was verified, as the
    cache says, without hashing it again (`harness list`; `cached` checks the bytes).

    The entry must be ours from the cache root down (safefs; else UntrustedCache):
    its record is all that says it was verified."""
    root, d = _root(cache), url_dir(url, cache)
    if safefs.folder(d, root, make=False) is None:
        return None
    if not (safefs.check_file(d / "data", root) and safefs.check_file(d / "digest", root)):
        return None
    try:
        return d / "data", safefs.read_text(d / "digest", root).strip()
    except ValueError:  # not UTF-8: not a digest this module wrote
        log.warning("fetch: %s is damaged: not used", d / "digest")
        return None


def cached(url: str, cache: Path | None = None) -> tuple[Path, str] | None:
    """The verified file for `url` and its digest, if the cache holds it unchanged
    (`recorded`). A file whose size or mtime differ from those recorded when it was
    verified is hashed again; one that no longer matches its digest leaves the cache."""
    if not (found := recorded(url, cache)):
        return None
    root, d, digest = _root(cache), url_dir(url, cache), found[1]
    if _stat_record(d / "data") == _read_record(d, root):
        return d / "data", digest
    if (got := _rehash(d / "data", digest, root)) != digest:
        log.warning("fetch: cached %s changed since it was verified (now %s, was %s): "
                    "removed from the cache", d / "data", got, digest)
        _evict(d)
        return None
    _write_record(d)
    return d / "data", digest


def anchor_of(path: Path, cache: Path | None = None) -> str:
    """What a cached download was verified against, as recorded when it was."""
    try:
        return safefs.read_text(path.with_name("verified_by"), _root(cache)).strip()
    except (OSError, ValueError):
        return ""


def _rehash(path: Path, digest: str, root: Path) -> str:
    algorithm = digest.split(":", 1)[0]
    log.info("fetch: hashing %s again: its size or mtime differ from the record", path)
    return file_digest(path, algorithm if algorithm in ALGORITHMS else "sha256", root)


def _stat_record(path: Path) -> dict:
    st = path.lstat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_record(d: Path, root: Path) -> dict | None:
    try:
        return json.loads(safefs.read_text(d / "verified.json", root))
    except (OSError, ValueError):
        return None


def _write_record(d: Path) -> None:
    replace_file(d / "verified.json", json.dumps(_stat_record(d / "data")) + "\n")


def _evict(d: Path) -> None:
    for name in ("verified.json", "verified_by", "digest", "data"):
        (d / name).unlink(missing_ok=True)


def verify_cache(cache: Path | None = None) -> list[tuple[str, str, bool]]:
    """Hash every cached download again: (url, digest, still good); bad ones leave.
    An entry that is not ours (safefs) is an UntrustedCache error, not hashed."""
    out = []
    root = _root(cache)
    top = safefs.folder(download_dir(cache), root, make=False)
    for d in sorted(top.iterdir()) if top else []:
        if d.suffix == ".lock" or not safefs.folder(d, root, make=False):
            continue
        if not (safefs.check_file(d / "data", root)
                and safefs.check_file(d / "digest", root)):
            continue
        url = d.name
        with contextlib.suppress(ValueError):  # a damaged url file: the entry's name will do
            if safefs.check_file(d / "url", root):
                url = safefs.read_text(d / "url", root).strip()
        digest = safefs.read_text(d / "digest", root).strip()
        good = _rehash(d / "data", digest, root) == digest
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
    """Whether bytes for `url` come over TLS. A file from the import folder never does,
    whatever the catalog's URL says: it is whatever was put in the folder."""
    if policy.import_dir:
        return False
    return urllib.parse.urlsplit(locate(url, policy)).scheme == "https"


def _cache_hit(source: Source, cache: Path | None) -> Fetched | None:
    for url in source.urls:
        if found := cached(url, cache):
            path, digest = found
            if source.digest and digest != source.digest:
                log.info("fetch: cached %s has %s, catalog pins %s: fetching again",
                         url, digest, source.digest)
                continue
            log.info("fetch: cached %s (%s)", path, digest)
            return Fetched(path, digest, url, source.version, size=path.stat().st_size,
                           verified_by=anchor_of(path, cache))
    return None


def _fetch_url(url: str, source: Source, policy: Policy, session: requests.Session,
               cache: Path | None, label: str) -> Fetched:
    root, d = _root(cache), url_dir(url, cache)
    safefs.folder(d.parent, root)
    with safefs.locked(d.with_suffix(".lock"), root, "fetch: waiting for another process "
                        "downloading the same file"):
        if found := cached(url, cache):  # another process fetched it while we waited
            path, digest = found
            if not source.digest or digest == source.digest:
                return Fetched(path, digest, url, source.version, size=path.stat().st_size,
                               verified_by=anchor_of(path, cache))
        expected, image_sig, anchor = _expected(url, source, policy, session)
        safefs.folder(d, root)
        replace_file(d / "url", url + "\n")
        where = locate(url, policy)
        if where != url:
            log.info("fetch: %s is served by %s", url, where)
        started = time.monotonic()
        partial = d / "data.partial"
        got = _get(where, partial, expected, policy, session, label or Path(url).name,
                   _cap(source), root)
        if got != expected:
            shutil.rmtree(d, ignore_errors=True)
            raise DigestMismatch(f"{where}: digest mismatch: expected {expected}, got {got}; "
                                 "nothing was cached")
        if image_sig:
            _verify_detached(image_sig, partial, source, d)
        log.info("fetch: %s: %s verified against %s", url, got, anchor)
        replace_file(d / "verified_by", anchor + "\n")
        replace_file(d / "digest", got + "\n")
        partial.rename(d / "data")
        _write_record(d)
        seconds = time.monotonic() - started
        return Fetched(d / "data", got, url, source.version, True, seconds,
                       (d / "data").stat().st_size, redact(where) if where != url else "",
                       anchor)


def _cap(source: Source) -> int:
    """The most bytes the download may have: the entry's max_mib, else the setting."""
    if source.max_bytes:
        return source.max_bytes
    try:
        return settings.get("HARNESS_IMAGE_MAX_MIB") * 2**20
    except settings.SettingError as e:
        raise FetchError(str(e), "setting") from None


def _get(where: str, partial: Path, expected: str, policy: Policy,
         session: requests.Session, label: str, cap: int, root: Path) -> str:
    """The digest of the file at `where`, copied into `partial`. A partial file that an
    earlier run left and that does not lead to the expected bytes is dropped once.
    Over the cap, or out of disk space, the partial file is removed."""
    algorithm = expected.split(":", 1)[0]
    try:
        if policy.import_dir:
            return _copy_local(Path(where), partial, algorithm, cap, root)
        resumed = safefs.check_file(partial, root) and partial.stat().st_size > 0
        got = _download(where, partial, algorithm, policy, session, label, cap, root)
        if got != expected and resumed:
            log.warning("fetch: %s: the partial download left earlier is not part of this "
                        "file; starting over from zero", where)
            partial.unlink(missing_ok=True)
            got = _download(where, partial, algorithm, policy, session, label, cap, root)
        return got
    except TooLarge:
        partial.unlink(missing_ok=True)
        raise
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        partial.unlink(missing_ok=True)
        raise DiskFull(f"{where}: no space left on the device of the cache {root} "
                       f"({_free_mib(root)} MiB free) while writing {partial.name}; the "
                       "partial file was removed: free some space, or set HARNESS_CACHE to "
                       "a folder on a larger disk") from None


def _free_mib(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 2**20


def _too_large(where: str, cap: int) -> TooLarge:
    return TooLarge(f"{where}: larger than the cap of {cap / 2**20:.0f} MiB (the catalog "
                    "entry's max_mib, or HARNESS_IMAGE_MAX_MIB); cut off, nothing was kept")


def _copy_local(path: Path, partial: Path, algorithm: str, cap: int, root: Path) -> str:
    """An imported file, copied into the cache entry while it is hashed: a regular
    file, not a symlink, no larger than the cap."""
    try:
        fd = safefs.open_fd(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"{path}: not in the import folder", "missing file") from None
    except safefs.NotRegular as e:
        raise FetchError(f"{path}: {e.strerror}: refused; put the file itself in the "
                         "import folder", "import") from None
    h = hashlib.new(algorithm)
    written = 0
    with os.fdopen(fd, "rb") as fin, _open_partial(partial, False, root) as fout:
        while chunk := fin.read(CHUNK):
            written += len(chunk)
            if written > cap:
                raise _too_large(str(path), cap)
            fout.write(chunk)
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def _open_partial(partial: Path, append: bool, root: Path) -> IO[bytes]:
    """data.partial of a checked entry: never through a symlink, ours, one link."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    try:
        return os.fdopen(safefs.open_fd(partial, flags, root), "ab" if append else "wb")
    except safefs.NotRegular as e:
        raise safefs.UntrustedCache(f"cache file {partial}: {e.strerror}: refused") from None


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
              session: requests.Session, label: str, cap: int, root: Path) -> str:
    """Stream `url` into `partial`, resuming it; return the digest of the whole file."""
    for attempt in _retrying(policy, url):
        with attempt:
            return _stream(url, partial, algorithm, policy, session, label, cap, root)
    raise AssertionError("unreachable")  # tenacity either returns or raises


def _no_downgrade(policy: Policy) -> Callable[..., requests.Response]:
    """A response hook, run on every hop of a redirect chain: an https URL that sends
    the client on to plain http is refused (it would take the bytes, or the digest,
    off TLS), unless the user opted in to plain HTTP."""
    def hook(r: requests.Response, *args, **kwargs) -> requests.Response:
        if not r.is_redirect or urllib.parse.urlsplit(r.url).scheme != "https":
            return r
        nxt = urllib.parse.urljoin(r.url, r.headers.get("location", ""))
        if urllib.parse.urlsplit(nxt).scheme == "https":
            return r
        if not policy.allow_insecure_http:
            r.close()
            raise Insecure(f"{r.url}: redirects to {nxt}, off HTTPS to plain HTTP, where "
                           "anyone on the path can change the bytes; refused (use a mirror "
                           "that stays on https, or set HARNESS_ALLOW_INSECURE_HTTP=1)")
        log.warning("fetch: INSECURE: %s redirects to plain HTTP %s "
                    "(HARNESS_ALLOW_INSECURE_HTTP=1)", r.url, nxt)
        return r
    return hook


def _stream(url: str, partial: Path, algorithm: str, policy: Policy,
            session: requests.Session, label: str, cap: int, root: Path) -> str:
    offset = partial.stat().st_size if safefs.check_file(partial, root) else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = (policy.connect_timeout, policy.read_timeout)
    with session.get(url, stream=True, headers=headers, timeout=timeout,
                     hooks={"response": [_no_downgrade(policy)]}) as r:
        _check_status(r, url)
        if r.status_code == 416:  # the partial file is not a prefix of this one
            partial.unlink()
            raise Transient(f"{url}: the server refused to resume (416); starting over")
        resumed = r.status_code == 206
        if resumed and not offset:
            raise FetchError(f"{url}: the server answered 206 Partial Content to a request "
                             "for the whole file", "HTTP 206")
        h = _hash_file(partial, algorithm, root) if resumed else hashlib.new(algorithm)
        if offset and not resumed:
            log.info("fetch: %s ignores Range requests; starting over", url)
        start = offset if resumed else 0
        length = int(r.headers.get("Content-Length", -1))
        total = start + length if length >= 0 else None
        if total is not None and total > cap:
            raise _too_large(f"{url} ({total / 2**20:.0f} MiB said the server)", cap)
        with _open_partial(partial, resumed, root) as f, \
                Progress(label, total, start) as progress, \
                ThreadPoolExecutor(1) as hasher:
            # read1 hands over what has arrived, so bytes before a dropped connection are
            # kept for the resume; the file's bytes are hashed as sent (no decoding).
            # Hashing one chunk overlaps receiving the next (hashlib releases the GIL).
            hashing = None
            while chunk := r.raw.read1(CHUNK, decode_content=False):
                if progress.done + len(chunk) > cap:  # a server that never ends
                    raise _too_large(url, cap)
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


def _hash_file(path: Path, algorithm: str, root: Path | None = None):
    """Hash a file opened without following a symlink (in a cache: ours, one link)."""
    h = hashlib.new(algorithm)
    try:
        fd = safefs.open_fd(path, os.O_RDONLY, root)
    except safefs.NotRegular as e:
        raise FetchError(f"{path}: {e.strerror}: refused", "not a regular file") from None
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h


def file_digest(path: Path, algorithm: str = "sha256", root: Path | None = None) -> str:
    return f"{algorithm}:{_hash_file(path, algorithm, root).hexdigest()}"


# -- checksum files and signatures ------------------------------------------------------

def _expected(url: str, source: Source, policy: Policy, session: requests.Session
              ) -> tuple[str, bytes, str]:
    """The digest the file must have; the vendor's detached signature of the file
    itself, when it signs the file rather than its checksums; and the trust anchor the
    digest rests on, in words for the log and the record.

    The rule (see the module's docstring): the catalog's pinned digest and the
    vendor's signature checked with the repo's key are anchors anywhere; a checksum
    file or stream metadata is one only when read over HTTPS on every hop. One that
    came in the import folder certifies nothing but itself: accepted only with
    --trust-import, one read over plain HTTP only with HARNESS_ALLOW_INSECURE_HTTP."""
    sig = get_bytes(source.signature_url, policy, session) if source.signature_url else b""
    clearsigned = signature.is_clearsigned(sig)
    if source.digest:
        expected, where = source.digest, source.digest_from
        trusted = not where or secure(where, policy)
        anchor = (f"the stream metadata {_shown(where, policy)}" if where
                  else "the digest pinned in the catalog")
    elif clearsigned:  # the checksum file itself, signed (Flatcar's .DIGESTS.asc)
        expected = _from_checksums(url, source, _signed_text(sig, source),
                                   source.signature_url)
        where, trusted = "", True
        anchor = (f"the checksum file {_shown(source.signature_url, policy)}, clearsigned "
                  f"with {Path(source.signature_key).name}")
    elif source.checksum_url:
        where = source.checksum_url
        text = get_text(where, policy, session)
        expected, trusted = _from_checksums(url, source, text, where), secure(where, policy)
        anchor = f"the checksum file {_shown(where, policy)}"
    else:
        raise FetchError(f"{url}: no digest to verify against: pin `digest` in the catalog, "
                         "or give a checksum file", "catalog")
    detached = sig if sig and not clearsigned else b""
    if detached:
        anchor += (f" and the image's signature {_shown(source.signature_url, policy)} "
                   f"with {Path(source.signature_key).name}")
    elif trusted and where:
        anchor += " read over HTTPS"
    elif not trusted:
        anchor += _unanchored(where, policy)
    return expected, detached, anchor


def _shown(url: str, policy: Policy) -> str:
    """Where a file was read, for the log and the record (never a password)."""
    return redact(_where(url, policy))


def _from_checksums(url: str, source: Source, text: str, where: str) -> str:
    algorithm = source.checksum_algorithm or "sha256"
    return f"{algorithm}:{parse_checksums(text, Path(url).name, algorithm, where)}"


def _unanchored(where: str, policy: Policy) -> str:
    """Refuse a digest nothing vouches for, or say on whose word it is taken."""
    if policy.import_dir:
        if not policy.trust_import:
            raise Insecure(f"{_shown(where, policy)}: came in the import folder beside the "
                           "image, so it proves nothing about it; give the vendor's signature "
                           "file too, pin `digest` in the catalog, or pass --trust-import if "
                           "you checked these files yourself", "unverified import")
        log.warning("fetch: UNVERIFIED: trusting %s from the import folder on the user's "
                    "word (--trust-import)", _shown(where, policy))
        return " from the import folder, on the user's word (--trust-import)"
    if not policy.allow_insecure_http:
        raise Insecure(f"{_shown(where, policy)}: the digest would be read over plain HTTP, "
                       "where anyone on the path can change it along with the image; pin "
                       "`digest` in the catalog, use an https mirror, or set "
                       "HARNESS_ALLOW_INSECURE_HTTP=1 to accept it")
    log.warning("fetch: INSECURE: trusting a digest read over plain HTTP from %s "
                "(HARNESS_ALLOW_INSECURE_HTTP=1)", _shown(where, policy))
    return " read over plain HTTP (INSECURE, HARNESS_ALLOW_INSECURE_HTTP=1)"


def _key(source: Source) -> Path:
    if not source.signature_key:
        raise SignatureError(f"{source.signature_url}: signed, but the catalog names no "
                             "signature_key to check it with")
    return Path(source.signature_key)


def _signed_text(clearsigned: bytes, source: Source) -> str:
    try:
        return signature.verify_clearsigned(clearsigned, _key(source))
    except signature.BadSignature as e:
        raise SignatureError(f"{source.signature_url}: {e}") from None


def _verify_detached(sig: bytes, data: Path, source: Source, d: Path) -> None:
    try:
        signature.verify_detached(sig, data, _key(source))
    except (signature.BadSignature, SignatureError) as e:
        shutil.rmtree(d, ignore_errors=True)
        raise SignatureError(f"{source.signature_url}: {e}; nothing was cached") from None
    log.info("fetch: signature verified: %s", source.signature_url)


def get_bytes(url: str, policy: Policy, session: requests.Session | None = None,
              limit: int = safefs.TEXT_MAX) -> bytes:
    """A small file (checksums, signature, stream metadata), at most `limit` bytes, with
    the same retry rules; from the mirror or the import folder when one serves it. A
    signature may be binary (CoreOS's .sig): bytes, never decoded here."""
    where = locate(check_url(url), policy)
    if policy.import_dir:
        try:
            return safefs.read_bytes(Path(where), limit)
        except FileNotFoundError:
            raise NotFound(f"{where}: not in the import folder", "missing file") from None
        except OSError as e:
            raise FetchError(f"{where}: {e.strerror or e}: refused; put the file itself in "
                             "the import folder", "import") from None
    if where != url:
        log.info("fetch: %s is served by %s", url, where)
    session = session or requests.Session()
    timeout = (policy.connect_timeout, policy.read_timeout)
    try:
        for attempt in _retrying(policy, where):
            with attempt, session.get(where, timeout=timeout, stream=True,
                             headers={"Accept-Encoding": "identity"},
                             hooks={"response": [_no_downgrade(policy)]}) as r:
                _check_status(r, where)
                data = r.raw.read(limit + 1, decode_content=False)
                if len(data) > limit:
                    raise TooLarge(f"{where}: larger than {limit // 2**20} MiB, more "
                                   "than such a file ever holds; refused")
                return data
    except (*TRANSIENT, requests.RequestException) as e:
        raise describe(e, where) from None
    raise AssertionError("unreachable")


def get_text(url: str, policy: Policy, session: requests.Session | None = None) -> str:
    """A small text file (checksums, stream metadata): get_bytes, as UTF-8."""
    data = get_bytes(url, policy, session)
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise FetchError(f"{_shown(url, policy)}: not UTF-8 text ({e.reason} at byte "
                         f"{e.start}); is it the right file?", "not text") from None


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
    d = safefs.folder(_root(cache) / "download" / "resolved", _root(cache))
    assert d is not None  # made when missing
    replace_file(d / f"{name}.json", json.dumps(data, indent=2) + "\n")


def last_resolution(name: str, cache: Path | None = None) -> dict | None:
    """The version last resolved online; a damaged record is an error saying what to do.
    It names the URLs to use, so it must be ours like every cache entry (safefs)."""
    root = _root(cache)
    d = safefs.folder(root / "download" / "resolved", root, make=False)
    p = root / "download" / "resolved" / f"{name}.json"
    if d is None or not safefs.check_file(p, root):
        return None
    try:
        rec = json.loads(safefs.read_text(p, root))
        if not isinstance(rec, dict) or not isinstance(rec.get("urls"), list) or \
                not rec["urls"] or not all(isinstance(u, str) for u in rec["urls"]):
            raise ValueError("it lists no urls")
    except (OSError, ValueError) as e:
        raise NotCached(f"{p}: the stored version record is damaged ({e}); delete it and run "
                        f"`harness fetch {name}` where the download host is reachable",
                        "damaged record") from None
    return rec

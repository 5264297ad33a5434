"""Files in the cache and in folders the user hands in, opened as the shared places
they may be.

Nothing in the cache is checked against anything but the cache's own records: a
"verified" download is trusted because its entry says so, a derived qcow2
because it sits where the conversion puts it. So whoever can write the cache
decides what boots. Another user may own it (HARNESS_CACHE pointed at theirs,
a cache restored by CI as another uid) and plant a record, a qcow2 backed by a
host file, or a lock that is a symlink to one of root's files.

The rule is ownership, checked on every use: the folders above the cache root
are owned by root or us and nobody else can rename in them
(paths.check_trusted_path); from the root down, each folder is a real folder
(not a symlink; the root may be a symlink of our own) of this uid that nobody
else can write, and each file a regular file of this uid with one link. Then
nobody but this uid (and root) can have put anything there or swap it after the
check. Anything else is refused with UntrustedCache, which names the path and
the way out; nothing in it is changed or deleted. Files are opened with
O_NOFOLLOW and O_NONBLOCK (a FIFO is refused, not waited on), a lock is never
truncated, records are written through paths.replace_file, small files are read
up to a bound.
"""

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from harness import paths
from harness.log import log

DIR_MODE = 0o755  # a cache holds public images, nothing secret: others may read it
TEXT_MAX = 4 * 2**20  # checksum files, signatures, records: far smaller than this


class UntrustedCache(RuntimeError):
    """A cache folder or file could have been written by someone else: refused."""


class NotRegular(OSError):
    """A file that should be a plain file is a symlink, FIFO, device or folder."""


def _way_out(root: Path) -> str:
    return (f"remove {root} (it may be someone else's trap) or set HARNESS_CACHE to a folder "
            f"only uid {os.geteuid()} can write; a cache you trust may be taken over with "
            f"`chown -R {os.geteuid()} {root}` and then `harness fetch --verify`")


def folder(path: Path, root: Path, make: bool = True) -> Path | None:
    """`path` (inside the cache `root`) once it and every folder from `root` down are
    ours; missing ones are made when `make`, else None is returned."""
    path, root = Path(path), Path(root)
    rel = path.relative_to(root)
    if make:
        paths.make_dirs(root.parent)
    elif not root.parent.is_dir():
        return None
    root = _followed(root)
    cur = root
    for part in ("", *rel.parts):
        cur = cur / part if part else cur
        if make:
            with contextlib.suppress(FileExistsError):
                os.mkdir(cur, DIR_MODE)
                os.chmod(cur, DIR_MODE)  # whatever the umask
        if (st := _lstat(cur)) is None:
            return None
        _check_dir(cur, st, root)
    return path


def _lstat(path: Path) -> os.stat_result | None:
    """The entry itself (a symlink is not followed), or None if there is none."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _followed(root: Path) -> Path:
    """The cache root, once nobody but root and us can rename it or a folder above
    (paths.check_trusted_path); through a symlink of our own (HARNESS_CACHE on another
    disk), while a symlink someone else made is not followed, and refused below."""
    _trusted_parent(root)
    st = _lstat(root)
    if st and stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid():
        root = root.resolve()
        _trusted_parent(root)
    return root


def _trusted_parent(root: Path) -> None:
    try:
        paths.check_trusted_path(root.parent, "HARNESS_CACHE")
    except paths.UnsafeRuntimeDir as e:
        raise UntrustedCache(str(e)) from None


def _check_dir(path: Path, st: os.stat_result, root: Path) -> None:
    if problem := paths.folder_problem(path, st):
        raise UntrustedCache(f"cache {problem}: what it holds may have been planted, "
                             f"refused; {_way_out(root)}")


def check_file(path: Path, root: Path) -> bool:
    """Whether `path` exists; if it does, it must be a regular file of ours with one link."""
    if (st := _lstat(path)) is None:
        return False
    _check_owned_file(path, st, root)
    return True


def _check_owned_file(path: Path, st: os.stat_result, root: Path) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedCache(f"cache file {path} is not a regular file (a symlink, FIFO, "
                             f"device or folder): refused; {_way_out(root)}")
    if st.st_uid != os.geteuid() or st.st_nlink != 1:
        who = (f"owned by uid {st.st_uid}" if st.st_uid != os.geteuid()
               else f"hard-linked ({st.st_nlink} names)")
        raise UntrustedCache(f"cache file {path} is {who}: refused; {_way_out(root)}")


def open_fd(path: Path, flags: int, root: Path | None = None, mode: int = 0o644) -> int:
    """An fd on the regular file `path`, never through a symlink; a FIFO or device is
    not waited on. With `root` (a cache), the file must also be ours with one link."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegular(errno.ELOOP, "is a symlink (not followed)", str(path)) from None
        raise
    st = os.fstat(fd)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(errno.EINVAL, "is not a regular file", str(path))
        if root is not None:
            _check_owned_file(path, st, root)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _untrusted(e: NotRegular, root: Path) -> UntrustedCache:
    return UntrustedCache(f"cache file {e.filename}: {e.strerror}: refused; {_way_out(root)}")


@contextlib.contextmanager
def locked(path: Path, root: Path, waiting: str = "") -> Iterator[None]:
    """An exclusive flock on `path`, created if missing but never truncated nor opened
    through a symlink; the kernel drops it when the holder dies."""
    try:
        fd = open_fd(path, os.O_RDWR | os.O_CREAT, root)
    except NotRegular as e:
        raise _untrusted(e, root) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.info("%s (%s)", waiting, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_bytes(path: Path, limit: int = TEXT_MAX, root: Path | None = None) -> bytes:
    """A small file's bytes: a regular file, not a symlink, at most `limit` bytes
    (a FIFO, /dev/zero or a huge file is refused, not waited on or read whole)."""
    try:
        fd = open_fd(path, os.O_RDONLY, root)
    except NotRegular as e:
        if root is not None:
            raise _untrusted(e, root) from None
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // 2**20} MiB, more than such a file "
                      "ever holds", str(path))
    return data


def read_text(path: Path, root: Path, limit: int = TEXT_MAX) -> str:
    """A small text record of the cache (ours, regular, bounded); bad UTF-8 is an error."""
    return read_bytes(path, limit, root).decode()

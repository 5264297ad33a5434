"""Turn a verified download into a qcow2 the VM driver can use as a base volume.

Each step (decompress; take the vmdk out of an OVA; convert to qcow2) is cached
on its own, keyed by the digest of the verified download, and written to a
temporary name then renamed, so a killed step leaves nothing that looks done.
Archive members are copied out by reading them, never by extracting the
archive, so no member name decides where a file lands.
"""

import bz2
import contextlib
import fcntl
import fnmatch
import gzip
import lzma
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from harness.log import step
from harness.paths import cache_dir

MAGIC = {b"\xfd7zXZ\x00": "xz", b"BZh": "bz2", b"\x1f\x8b": "gz", b"\x28\xb5\x2f\xfd": "zstd"}


class ConvertError(RuntimeError):
    pass


def derived_dir(digest: str, cache: Path | None = None) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return (cache or cache_dir()) / "derived" / f"{algorithm}-{hexdigest}"


def compression_of(path: Path) -> str:
    """What the file really is, by its first bytes: a local file need not match the catalog."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), "none")


def disk_format(path: Path, declared: str) -> str:
    """qcow2 and vmdk by their magic, an OVA by being a tar; anything else as declared."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"QFI\xfb":
        return "qcow2"
    if head == b"KDMV":
        return "vmdk"
    if declared == "ova" and tarfile.is_tarfile(path):
        return "ova"
    return declared if declared in ("raw", "iso") else "raw"


def to_qcow2(src: Path, digest: str, declared_format: str, member: str = "",
             cache: Path | None = None) -> Path:
    """The qcow2 for a verified download: each step below is cached on its own."""
    out = derived_dir(digest, cache)
    path = src
    if (kind := compression_of(path)) != "none":
        path = cached_step(out / "decompressed", lambda dst, p=path, k=kind: decompress(p, dst, k),
                           f"decompress {kind}")
    fmt = disk_format(path, declared_format)
    if fmt == "ova":
        path = cached_step(out / "member.vmdk",
                           lambda dst, p=path: ova_member(p, member or "*.vmdk", dst),
                           "take the disk out of the OVA")
        fmt = disk_format(path, "vmdk")
    if fmt == "qcow2":
        return path
    return cached_step(out / "disk.qcow2",
                       lambda dst, p=path, f=fmt: qemu_img_convert(p, f, dst),
                       f"convert {fmt} to qcow2")


def cached_step(dest: Path, make: Callable[[Path], None], what: str) -> Path:
    """Run `make(tmp)` once per destination, under a lock; rename the result into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        if dest.exists():
            return dest
        tmp = dest.with_name(dest.name + ".partial")
        tmp.unlink(missing_ok=True)
        try:
            with step(f"{what} ({dest.parent.name[:19]})", "image"):
                make(tmp)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def decompress(src: Path, dst: Path, kind: str) -> None:
    if kind == "zstd":  # not in Python 3.11's standard library; the zstd tool is
        _run("zstd", "-q", "-d", "-f", "-o", str(dst), str(src))
        return
    opener: Callable[[Path], IO[bytes]] = {"xz": lzma.open, "bz2": bz2.open,
                                           "gz": gzip.open}[kind]
    with opener(src) as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1024 * 1024)


def ova_member(ova: Path, pattern: str, dst: Path) -> None:
    """Copy the one regular file matching `pattern` out of the OVA (a tar) into `dst`."""
    with tarfile.open(ova) as tar:
        found = [m for m in tar.getmembers()
                 if m.isfile() and fnmatch.fnmatch(Path(m.name).name, pattern)]
        if len(found) != 1:
            names = ", ".join(m.name for m in tar.getmembers())
            raise ConvertError(f"{ova}: expected one member matching {pattern!r}, "
                               f"found {len(found)} (members: {names})")
        fin = tar.extractfile(found[0])
        assert fin is not None  # a regular file always has a body
        with fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)


def qemu_img_convert(src: Path, fmt: str, dst: Path) -> None:
    # An ISO is raw bytes to qemu-img; the driver attaches it as a CD-ROM.
    _run("qemu-img", "convert", "-q", "-f", "raw" if fmt == "iso" else fmt,
         "-O", "qcow2", str(src), str(dst))


def _run(*cmd: str) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise ConvertError(f"{cmd[0]} is not installed (Debian package: "
                           f"{'qemu-utils' if cmd[0] == 'qemu-img' else cmd[0]})") from e
    except subprocess.CalledProcessError as e:
        raise ConvertError(f"{' '.join(cmd)} failed: {e.stderr.strip()}") from e

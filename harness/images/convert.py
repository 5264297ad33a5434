"""Turn a verified download into a qcow2 the VM driver can use as a base volume.

Each step (decompress; take the vmdk out of an OVA; convert to qcow2) is cached
on its own, keyed by the digest of the verified download, and written to a
temporary name then renamed, so a killed step leaves nothing that looks done.
Archive members are copied out by reading them, never by extracting the
archive, so no member name decides where a file lands.

A downloaded image is untrusted input: unpacking stops at a size cap (the
entry's `max_mib`, else HARNESS_IMAGE_MAX_MIB), a file must look like the disk
it claims to be, and a qcow2 or vmdk that names a backing file, a parent, an
external data file or extents in other files is refused (`qemu-img info`),
since it would pull host files into the guest. Conversion also opens the image
with backing files disabled.

What a step made is trusted no more than a download: its folder must be ours
from the cache root down (harness.safefs), and the qcow2 handed to the driver
is inspected again on every use, so a derived image that names a backing file
is refused however it got there. A full disk is one line, the partial file
removed.
"""

import bz2
import errno
import fnmatch
import gzip
import json
import lzma
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from harness import safefs, settings
from harness.log import step
from harness.paths import cache_dir

MAGIC = {b"\xfd7zXZ\x00": "xz", b"BZh": "bz2", b"\x1f\x8b": "gz", b"\x28\xb5\x2f\xfd": "zstd"}


FULL = (errno.ENOSPC, errno.EDQUOT)  # out of space, or over a quota
DEFAULT_MAX_MIB = 32768  # the catalog's largest disks are about 10 GiB


class ConvertError(RuntimeError):
    pass


class NotADisk(ConvertError):
    """The file is not the kind of disk image it is declared or detected to be."""


class TooLarge(ConvertError):
    """Unpacking would exceed the size cap (a decompression bomb, or a wrong file)."""


class UnsafeImage(ConvertError):
    """The image refers to other files (backing file, parent, data file, extents)."""


class DiskFull(ConvertError):
    """The cache's disk ran out of space during a step; its partial file was removed."""


def max_bytes(max_mib: int = 0) -> int:
    """The cap on an unpacked image: the entry's own, else HARNESS_IMAGE_MAX_MIB."""
    if max_mib:
        return max_mib * 2**20
    try:
        return settings.get("HARNESS_IMAGE_MAX_MIB") * 2**20
    except settings.SettingError as e:
        raise ConvertError(str(e)) from None


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
    if declared == "ova":
        if not tarfile.is_tarfile(path):
            raise NotADisk(f"{path}: declared an OVA, but it is not a tar archive")
        return "ova"
    return declared if declared in ("raw", "iso") else "raw"


def check_looks_like(path: Path, fmt: str) -> None:
    """A raw disk has a boot-sector signature (MBR, or GPT's protective MBR); an ISO has
    the ISO 9660 volume descriptor. A text file, say, is neither."""
    with open(path, "rb") as f:
        head = f.read(0x8006)
    if fmt == "iso" and head[0x8001:0x8006] == b"CD001":
        return
    if fmt in ("raw", "iso") and head[510:512] == b"\x55\xaa":
        return  # an isohybrid ISO boots as a disk too
    if fmt in ("raw", "iso"):
        what = "an ISO 9660 image" if fmt == "iso" else "a disk image (no boot sector)"
        raise NotADisk(f"{path}: not {what}; {len(head)} bytes begin {head[:16]!r}")


def inspect(path: Path, fmt: str, limit: int) -> dict:
    """`qemu-img info` of an untrusted image; refuse references to other files and
    virtual sizes over the cap."""
    out = _run("qemu-img", "info", "--output=json", "-f", fmt, str(path))
    info = json.loads(out)
    data = info.get("format-specific", {}).get("data", {})
    refs = [info.get("backing-filename"), info.get("full-backing-filename"),
            data.get("data-file")]
    refs += [e.get("filename") for e in data.get("extents", [])
             if Path(e.get("filename", "")).name != path.name]
    if any(refs):
        raise UnsafeImage(f"{path}: the {fmt} image refers to other files "
                          f"({', '.join(r for r in refs if r)}): a backing file, parent or "
                          "external data would pull host files into the guest; refused")
    if info.get("virtual-size", 0) > limit:
        raise TooLarge(f"{path}: virtual size {info['virtual-size'] / 2**20:.0f} MiB is over "
                       f"the cap of {limit / 2**20:.0f} MiB (catalog max_mib, or "
                       "HARNESS_IMAGE_MAX_MIB)")
    return info


def to_qcow2(src: Path, digest: str, declared_format: str, member: str = "",
             cache: Path | None = None, max_mib: int = 0) -> Path:
    """The qcow2 for a verified download: each step below is cached on its own."""
    root = cache or cache_dir()
    out = derived_dir(digest, root)
    limit = max_bytes(max_mib)
    path = src
    if (kind := compression_of(path)) != "none":
        path = cached_step(out / "decompressed",
                           lambda dst, p=path, k=kind: decompress(p, dst, k, limit),
                           f"decompress {kind}", root)
    fmt = disk_format(path, declared_format)
    if fmt == "ova":
        path = cached_step(out / "member.vmdk",
                           lambda dst, p=path: ova_member(p, member or "*.vmdk", dst, limit),
                           "take the disk out of the OVA", root)
        fmt = disk_format(path, "vmdk")
    check_looks_like(path, fmt)
    inspect(path, "raw" if fmt == "iso" else fmt, limit)
    if fmt == "qcow2":
        return path
    disk = cached_step(out / "disk.qcow2",
                       lambda dst, p=path, f=fmt: qemu_img_convert(p, f, dst),
                       f"convert {fmt} to qcow2", root)
    inspect(disk, "qcow2", limit)  # ours, but checked on every use like any other image
    return disk


def cached_step(dest: Path, make: Callable[[Path], None], what: str,
                root: Path | None = None) -> Path:
    """Run `make(tmp)` once per destination, under a lock; rename the result into place.
    The folder and a result found there must be ours (safefs.UntrustedCache)."""
    root = root or cache_dir()
    safefs.folder(dest.parent, root)
    with safefs.locked(dest.with_name(dest.name + ".lock"), root):
        if safefs.check_file(dest, root):
            return dest
        tmp = dest.with_name(dest.name + ".partial")
        tmp.unlink(missing_ok=True)
        try:
            with step(f"{what} ({dest.parent.name[:19]})", "image"):
                make(tmp)
            tmp.rename(dest)
        except OSError as e:
            if e.errno not in FULL:
                raise
            raise DiskFull(f"{dest}: no space left on the device of the cache {root} while "
                           f"{what}; the partial file was removed: free some space, or set "
                           "HARNESS_CACHE to a folder on a larger disk") from None
        finally:
            tmp.unlink(missing_ok=True)
    return dest


def decompress(src: Path, dst: Path, kind: str, limit: int | None = None) -> None:
    """Undo `kind`, refusing to write more than `limit` bytes."""
    limit = limit or max_bytes()
    if kind == "zstd":  # not in Python 3.11's standard library; the zstd tool is
        with subprocess.Popen(["zstd", "-q", "-d", "-c", str(src)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as p:
            assert p.stdout is not None
            try:
                _copy_capped(p.stdout, dst, limit, src)
            finally:
                p.kill()
        return
    opener: Callable[[Path], IO[bytes]] = {"xz": lzma.open, "bz2": bz2.open,
                                           "gz": gzip.open}[kind]
    try:
        with opener(src) as fin:
            _copy_capped(fin, dst, limit, src)
    except (lzma.LZMAError, OSError, EOFError) as e:
        if isinstance(e, ConvertError) or getattr(e, "errno", None) in FULL:
            raise  # a full disk is the cache's trouble, not the file's
        raise ConvertError(f"{src}: cannot decompress as {kind}: {e}") from None


def _copy_capped(fin: IO[bytes], dst: Path, limit: int, src: Path) -> None:
    written = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(safefs.open_fd(dst, flags), "wb") as fout:
        while chunk := fin.read(1024 * 1024):
            written += len(chunk)
            if written > limit:
                raise TooLarge(f"{src}: unpacks to more than {limit / 2**20:.0f} MiB, the cap "
                               "(the catalog entry's max_mib, or HARNESS_IMAGE_MAX_MIB); "
                               "refused")
            fout.write(chunk)


def ova_member(ova: Path, pattern: str, dst: Path, limit: int | None = None) -> None:
    """Copy the one regular file matching `pattern` out of the OVA (a tar) into `dst`."""
    try:
        with tarfile.open(ova) as tar:
            found = [m for m in tar.getmembers()
                     if m.isfile() and fnmatch.fnmatch(Path(m.name).name, pattern)]
            if len(found) != 1:
                names = ", ".join(m.name for m in tar.getmembers())
                raise ConvertError(f"{ova}: expected one member matching {pattern!r}, "
                                   f"found {len(found)} (members: {names})")
            fin = tar.extractfile(found[0])
            assert fin is not None  # a regular file always has a body
            with fin:
                _copy_capped(fin, dst, limit or max_bytes(), ova)
    except tarfile.TarError as e:
        raise NotADisk(f"{ova}: declared an OVA, but it is not a tar archive ({e})") from None


def qemu_img_convert(src: Path, fmt: str, dst: Path) -> None:
    """Convert with backing files disabled: even a reference `inspect` missed opens
    nothing. An ISO is raw bytes to qemu-img; the driver attaches it as a CD-ROM."""
    driver = "raw" if fmt == "iso" else fmt
    spec: dict = {"driver": driver, "file": {"driver": "file", "filename": str(src.resolve())}}
    if driver != "raw":
        spec["backing"] = None
    _run("qemu-img", "convert", "-q", "-O", "qcow2", "json:" + json.dumps(spec), str(dst))


def _run(*cmd: str) -> str:
    try:
        # errors="replace": qemu-img quotes names stored in the untrusted image
        return subprocess.run(cmd, check=True, capture_output=True, text=True,
                              errors="replace").stdout
    except FileNotFoundError as e:
        raise ConvertError(f"{cmd[0]} is not installed (Debian package: "
                           f"{'qemu-utils' if cmd[0] == 'qemu-img' else cmd[0]})") from e
    except subprocess.CalledProcessError as e:
        if "No space left on device" in e.stderr:
            raise OSError(errno.ENOSPC, e.stderr.strip()) from None  # cached_step says it
        raise ConvertError(f"{' '.join(cmd)} failed: {e.stderr.strip()}") from e

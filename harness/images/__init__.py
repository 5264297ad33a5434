"""Find the disk image a catalog entry boots: built here (refos) or fetched.

Two kinds of failure leave here, both with a message a user can act on:
ImageUsageError when the user named a local image that cannot be used (a usage
error: the path and why), and ImageUnavailable when the image cannot be had
(the distro, its version, what failed, and every way out). A caller reports
either once per distro, not once per test.
"""

import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from harness import catalog, safefs, settings
from harness.catalog import Distro
from harness.images import build, convert, fetch, streams
from harness.log import log, redact
from harness.paths import cache_dir
from harness.safefs import UntrustedCache


class ImageUsageError(ValueError):
    """A local image the user named (--image, HARNESS_IMAGE_…) cannot be used."""


class ImageUnavailable(RuntimeError):
    """The image is not here and cannot be had; the message names the distro, the version,
    what failed (`what`: DNS, TLS, HTTP 404, digest, ...) and the ways out."""

    def __init__(self, distro: Distro | str, what: str = "", detail: str = "",
                 version: str = ""):
        if isinstance(distro, str):  # a plain message, from code that has no entry at hand
            self.distro, self.what, self.detail, self.version = "", what, distro, version
            self.ways: list[str] = []
            super().__init__(distro)
            return
        self.distro, self.what, self.detail = distro.name, what, detail
        self.version = version or _version(distro)
        self.ways = ways_out(distro)
        super().__init__(f"{self.line()}\n  {detail.replace(chr(10), chr(10) + '  ')}\n"
                         "Ways out (any one):\n" + "\n".join(f"  {w}" for w in self.ways))

    def line(self) -> str:
        """One line for a test's error or skip, and the matrix's "not run" row."""
        if not self.distro:
            return str(self).splitlines()[0]
        return (f"{self.distro} ({self.version}): image unavailable: {self.what}; "
                f"see --image PATH, {env_var_name(self.distro)}=PATH, "
                f"`harness fetch --import DIR {self.distro}` or HARNESS_MIRRORS")


@dataclass(frozen=True)
class LocalImage:
    path: Path  # a qcow2 file in the cache
    key: str  # names the content, for the pool's base volume
    kernel: Path | None = None  # for the KVM probe, when known
    version: str = ""  # the concrete version, when the catalog names a moving target
    source: str = ""  # the URL or local file it came from
    digest: str = ""  # of the verified download (or the local file)
    media: str = "disk"  # "cdrom" for ISO images: attach read-only as a CD-ROM
    served_from: str = field(default="")  # the mirror or imported file that served it
    verified_by: str = ""  # what the digest was checked against (the trust anchor)

    def record(self) -> dict:
        """What a run records about its image (no URL in it carries a password)."""
        return {"key": self.key, "path": str(self.path), "version": self.version,
                "source": redact(self.source), "digest": self.digest, "media": self.media,
                "served_from": redact(self.served_from), "verified_by": self.verified_by}


def resolve(distro: Distro, offline: bool = False, image_path: Path | str | None = None,
            policy: fetch.Policy | None = None) -> LocalImage:
    """The qcow2 to boot: built (refos), a local file (--image or the entry's variable),
    or fetched into the cache (only from the cache when offline)."""
    env = env_var(distro)
    given, why = (image_path, "--image") if image_path else (os.environ.get(env), env)
    if distro.builtin:
        if given:
            raise ImageUsageError(f"{why} {given}: {distro.name} is built here from "
                                  "images/refos (`harness build`), so a local image is not "
                                  "used; drop it, or pick a downloaded distro")
        try:
            check_build_cache()
        except UntrustedCache as e:
            raise ImageUnavailable(distro, "untrusted cache", str(e)) from None
        built = build.build()
        path = built.disk_file(distro.image.build)
        return LocalImage(path, f"{built.root.name}-{path.stem}", built.kernel)
    got = _local(distro, Path(given), why) if given else _fetched(distro, offline, policy)
    try:
        disk = convert.to_qcow2(got.path, got.digest, distro.image.format, distro.image.member,
                                max_mib=distro.image.max_mib)
    except UntrustedCache as e:
        raise ImageUnavailable(distro, "untrusted cache", str(e), got.version) from None
    except convert.ConvertError as e:
        if given:
            raise ImageUsageError(f"{why} {given}: {e}") from None
        raise ImageUnavailable(distro, _convert_kind(e), str(e), got.version) from None
    media = "cdrom" if distro.image.format == "iso" else "disk"
    return LocalImage(disk, f"{distro.name}-{got.digest.split(':', 1)[1][:16]}", None,
                      got.version, got.url, got.digest, media, got.served_from,
                      got.verified_by)


def check_build_cache() -> None:
    """refos's build is used, and its lock opened, only where this uid alone can write
    (safefs; else UntrustedCache): another user's "build" would boot as ours, and a
    lock planted as a symlink would be truncated by build(). Checked once, it holds:
    nobody else can change the folders below a trusted one."""
    out, root = build.artifacts(), cache_dir()
    safefs.folder(out.root.parent, root)
    safefs.check_file(out.root.with_suffix(".lock"), root)
    if safefs.folder(out.root, root, make=False):
        safefs.check_file(out.root / "build.json", root)


def env_var(distro: Distro) -> str:
    return distro.image.env or env_var_name(distro.name)


def env_var_name(name: str) -> str:
    return "HARNESS_IMAGE_" + name.upper().replace("-", "_")


def check_settings() -> None:
    """Every HARNESS_* setting (settings.check), and each HARNESS_IMAGE_<DISTRO> must
    name a catalog distro: a typo would be ignored, and the image downloaded instead of
    the file given."""
    names = settings.check()
    try:
        known = {env_var(d) for d in catalog.load().values()}
    except catalog.CatalogError:
        return  # said by whatever reads the catalog next
    for name in names:
        if name not in known:
            raise settings.SettingError(
                f"{name} names no distro of the catalog ({name[len('HARNESS_IMAGE_'):]!r}); "
                f"known: {', '.join(sorted(known))}")


def ways_out(distro: Distro) -> list[str]:
    """Every way to give the harness this distro's image without its download host."""
    hosts = sorted({h for u in (*distro.image.urls, distro.image.stream_url)
                    if (h := urllib.parse.urlsplit(u).hostname)})
    name = Path(distro.image.urls[0]).name if distro.image.urls else "the image"
    mirror = hosts[0] if hosts else "HOST"
    # A checksum file carried in with the image vouches for nothing (fetch._expected).
    anchored = bool(distro.image.digest or distro.image.signature_url)
    vouch = "" if anchored else (" (nothing in the catalog vouches for them offline: add "
                                 "--trust-import once you have checked them yourself)")
    return [
        f"--image PATH (or {env_var(distro)}=PATH): a copy of {name} you already have",
        f"`harness fetch --urls {distro.name}` lists the files to download elsewhere; "
        f"`harness fetch --import DIR {distro.name}` verifies them and puts them in the "
        f"cache{vouch}",
        f"a mirror of {', '.join(hosts) or 'the download host'}: "
        f"HARNESS_MIRRORS={mirror}=URL (or `harness fetch --mirror {mirror}=URL`)",
    ]


def _version(distro: Distro) -> str:
    return distro.title.split("(", 1)[0].strip() or distro.name


def _convert_kind(e: convert.ConvertError) -> str:
    return {convert.TooLarge: "too large", convert.UnsafeImage: "unsafe image",
            convert.NotADisk: "not a disk image",
            convert.DiskFull: "disk full"}.get(type(e), "conversion")


def _fetched(distro: Distro, offline: bool, policy: fetch.Policy | None) -> fetch.Fetched:
    version = ""
    try:
        source = streams.source(distro, offline, policy)
        version = source.version
        return fetch.fetch(source, offline, policy, label=distro.name)
    except fetch.FetchError as e:
        raise ImageUnavailable(distro, e.kind, str(e), version) from None
    except UntrustedCache as e:
        raise ImageUnavailable(distro, "untrusted cache", str(e), version) from None


def _local(distro: Distro, path: Path, why: str) -> fetch.Fetched:
    """A file the user provides; checked against a pinned digest when there is one."""
    if not path.exists():
        raise ImageUsageError(f"{why} {path}: no such file")
    if path.is_dir():
        raise ImageUsageError(f"{why} {path}: is a folder; give the image file itself")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ImageUsageError(f"{why} {path}: not a readable regular file")
    algorithm = distro.image.digest.split(":", 1)[0] if distro.image.digest else "sha256"
    digest = fetch.file_digest(path, algorithm)
    if distro.image.digest and digest != distro.image.digest:
        raise ImageUsageError(f"{why} {path}: digest mismatch: expected "
                              f"{distro.image.digest}, got {digest}")
    log.info("image: %s: local file %s (%s%s)", distro.name, path, digest,
             ", matches the catalog" if distro.image.digest else ", nothing pinned to check")
    anchor = ("the digest pinned in the catalog" if distro.image.digest
              else f"nothing: a local file given with {why}, nothing pinned to check")
    return fetch.Fetched(path.resolve(), digest, str(path.resolve()), verified_by=anchor)


def needed_files(distro: Distro, policy: fetch.Policy | None = None,
                 offline: bool = False) -> dict:
    """Every file `distro` needs from its download hosts, with the digest the catalog
    pins where it pins one: what `harness fetch --urls` prints."""
    entry: dict = {"distro": distro.name, "version": _version(distro), "files": [], "note": ""}
    if distro.builtin:
        entry["note"] = "built here from images/refos (`harness build`); nothing to download"
        return entry
    img = distro.image
    if img.stream:
        entry["files"].append({"role": "version", "url": img.stream_url, "digest": ""})
    try:
        source = streams.source(distro, offline or bool(img.stream and _resolved(distro)),
                                policy)  # a version resolved before is the one cached
    except fetch.FetchError as e:
        entry["note"] = (f"the current version is not known here ({e.kind}): download "
                         f"{img.stream_url} first; the files are "
                         + ", ".join((*img.urls, img.checksum_url, img.signature_url)))
        return entry
    entry["version"] = source.version or entry["version"]
    entry["files"] += [f for f in source.files() if f["url"] != img.stream_url]
    return entry


def _resolved(distro: Distro) -> bool:
    return fetch.last_resolution(distro.name) is not None

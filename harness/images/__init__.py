"""Find the disk image a catalog entry boots: built here (refos) or fetched."""

import os
from dataclasses import dataclass
from pathlib import Path

from harness.catalog import Distro
from harness.images import build, convert, fetch, streams
from harness.log import log


class ImageUnavailable(RuntimeError):
    """The image is not here and cannot be made; the message says how to provide it."""


@dataclass(frozen=True)
class LocalImage:
    path: Path  # a qcow2 file in the cache
    key: str  # names the content, for the pool's base volume
    kernel: Path | None = None  # for the KVM probe, when known
    version: str = ""  # the concrete version, when the catalog names a moving target
    source: str = ""  # the URL or local file it came from
    digest: str = ""  # of the verified download (or the local file)
    media: str = "disk"  # "cdrom" for ISO images: attach read-only as a CD-ROM

    def record(self) -> dict:
        """What a run records about its image."""
        return {"key": self.key, "path": str(self.path), "version": self.version,
                "source": self.source, "digest": self.digest, "media": self.media}


def resolve(distro: Distro, offline: bool = False, image_path: Path | str | None = None
            ) -> LocalImage:
    """The qcow2 to boot: built (refos), a local file (--image or the entry's variable),
    or fetched into the cache (only from the cache when offline)."""
    if distro.builtin:
        built = build.build()
        path = getattr(built, distro.image.build)
        return LocalImage(path, f"{built.root.name}-{path.stem}", built.kernel)
    env = env_var(distro)
    local = image_path or os.environ.get(env)
    try:
        got = _local(distro, Path(local)) if local else _fetched(distro, offline)
        disk = convert.to_qcow2(got.path, got.digest, distro.image.format, distro.image.member)
    except fetch.NotCached as e:
        raise ImageUnavailable(
            f"{distro.name}: image not cached and --offline forbids downloading ({e}). "
            f"Provide it with --image PATH or {env}=PATH, or run `harness fetch "
            f"{distro.name}` where the download host is reachable") from None
    except convert.ConvertError as e:
        raise ImageUnavailable(f"{distro.name}: {e}") from None
    media = "cdrom" if distro.image.format == "iso" else "disk"
    return LocalImage(disk, f"{distro.name}-{got.digest.split(':', 1)[1][:16]}", None,
                      got.version, got.url, got.digest, media)


def env_var(distro: Distro) -> str:
    return distro.image.env or "HARNESS_IMAGE_" + distro.name.upper().replace("-", "_")


def _fetched(distro: Distro, offline: bool) -> fetch.Fetched:
    return fetch.fetch(streams.source(distro, offline), offline, label=distro.name)


def _local(distro: Distro, path: Path) -> fetch.Fetched:
    """A file the user provides; checked against a pinned digest when there is one."""
    if not path.is_file():
        raise ImageUnavailable(f"{distro.name}: local image {path} is not a file")
    algorithm = distro.image.digest.split(":", 1)[0] if distro.image.digest else "sha256"
    digest = fetch.file_digest(path, algorithm)
    if distro.image.digest and digest != distro.image.digest:
        raise fetch.DigestMismatch(f"{path}: digest mismatch: expected {distro.image.digest}, "
                                   f"got {digest}")
    log.info("image: %s: local file %s (%s%s)", distro.name, path, digest,
             ", matches the catalog" if distro.image.digest else ", nothing pinned to check")
    return fetch.Fetched(path.resolve(), digest, str(path.resolve()))

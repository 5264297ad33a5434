"""Find the disk image a catalog entry boots: built here (refos) or fetched."""

from dataclasses import dataclass
from pathlib import Path

from harness import imagebuild
from harness.catalog import Distro


class ImageUnavailable(RuntimeError):
    """The image is not here and cannot be made; the message says how to provide it."""


@dataclass(frozen=True)
class LocalImage:
    path: Path  # a qcow2 file in the cache
    key: str  # names the content, for the pool's base volume
    kernel: Path | None = None  # for the KVM probe, when known


def resolve(distro: Distro, offline: bool = False) -> LocalImage:
    if distro.builtin:
        built = imagebuild.build()
        path = getattr(built, distro.image.build)
        return LocalImage(path, f"{built.root.name}-{path.stem}", built.kernel)
    raise ImageUnavailable(
        f"{distro.name}: downloaded images are not supported by this build of the harness")

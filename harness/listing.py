"""`harness list`: what the harness knows, read from the catalog and the cache only.

Each distro with its family, update mechanism, firmware, where its image comes
from and whether the cache has it already, and the promises it makes (the
pytest markers of harness.plugin.promises: a test of a promise a distro does not
make is skipped, with the reason listed here). Nothing is downloaded, built or
hashed: a cached image is one whose files are in the cache, as a run would find
them (a run still verifies them).
"""

import json
import os
from dataclasses import asdict, dataclass, field

from harness import catalog, images, safefs
from harness.images import build, fetch, streams
from harness.plugin.promises import PROMISES


@dataclass(frozen=True)
class Entry:
    """One distro as `harness list` shows it; `--json` prints these fields."""

    distro: str
    title: str
    family: str
    update: str  # the update mechanism (harness.updates adapter)
    firmware: str
    memory_mib: int
    seed: str  # the first-boot format
    image: str  # "build": made here; "download": fetched and verified; "local": a file given
    cached: bool  # the image is in the cache already (for "local": the file exists)
    promises: list[str] = field(default_factory=list)  # the ones it makes
    not_promised: dict[str, str] = field(default_factory=dict)  # the others, and why


def entries(names: list[str], known: dict[str, catalog.Distro] | None = None) -> list[Entry]:
    known = known if known is not None else catalog.load()
    return [entry(known[name]) for name in names]


def entry(d: catalog.Distro) -> Entry:
    image, cached = image_source(d)
    why = {name: check(d, False) for name, check in PROMISES.items()}  # a closed network
    return Entry(d.name, d.title, d.family, d.promises.update, d.boot.firmware,
                 d.boot.memory_mib, d.boot.seed, image, cached,
                 [name for name, reason in why.items() if reason is None],
                 {name: reason for name, reason in why.items() if reason is not None})


def image_source(d: catalog.Distro) -> tuple[str, bool]:
    """Where a run takes the image from, and whether it is here already."""
    if d.builtin:
        built = build.artifacts()  # hashes the recipe's files, builds nothing
        return "build", (built.root / "build.json").is_file() and \
            built.disk_file(d.image.build).is_file()
    if given := os.environ.get(images.env_var(d)):
        return "local", os.path.isfile(given)
    return "download", _downloaded(d)


def _downloaded(d: catalog.Distro) -> bool:
    """Whether the cache holds a verified download for the entry (offline: a moving
    target counts as cached only for the version resolved last)."""
    try:  # the fetcher's own look-ups: a cache someone else could have planted is refused
        source = streams.source(d, offline=True)
        found = [fetch.recorded(url) for url in source.urls]
    except (fetch.FetchError, safefs.UntrustedCache, OSError):
        return False
    return any(f and (not source.digest or f[1] == source.digest) for f in found)


def as_json(found: list[Entry]) -> str:
    """One line of JSON, a list of objects: also the nightly workflow's job matrix."""
    return json.dumps([asdict(e) for e in found])


def as_table(found: list[Entry]) -> str:
    """A table for people: one line per distro, then the promises it makes."""
    head = ("DISTRO", "FAMILY", "UPDATE", "FIRMWARE", "IMAGE", "PROMISES")
    rows = [(e.distro, e.family, e.update, e.firmware, _image_cell(e), " ".join(e.promises))
            for e in found]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                                row[-1]]).rstrip() for row in (head, *rows))


def _image_cell(e: Entry) -> str:
    label = {"build": "built here", "download": "download", "local": "local file"}[e.image]
    if e.image == "local":
        return label if e.cached else f"{label} (missing)"
    return f"{label}, cached" if e.cached else label

"""The distro catalog: every per-distro fact as data, validated when loaded.

images/catalog.toml holds one table per distro version. Loading checks each
field's type and allowed values, and a bad entry is an error naming the file,
the entry and the field, so a typo never surfaces as a strange boot failure.
An entry may `extends = "other"`: it is the other entry with its own tables
merged over it, so a variant says only what differs. `boot.seed`,
`boot.seed_options`, `promises.update` and `image.build` are checked against
the registries of what the harness can do (harness.seed's writers,
harness.registry's update adapters and built disks) when the catalog loads, not
when a machine boots; neither registry imports a step above the catalog.
"""

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from harness import registry, seed, settings
from harness.paths import REPO

CATALOG = REPO / "images" / "catalog.toml"

FIRMWARE = ("uefi", "bios")
DOCKER_START = ("enabled", "socket", "system-docker", "framework", "snap", "manual")
COMPRESSION = ("none", "xz", "bz2", "gz", "zstd")
FORMATS = ("qcow2", "raw", "iso", "ova", "vmdk")
STREAMS = ("", "fedora-coreos", "flatcar")  # how a moving target becomes a version
CHECKSUM_ALGORITHMS = ("", "sha256", "sha512", "sha1")
_HEX_WIDTH = {"sha256": 64, "sha512": 128, "sha1": 40}


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class Image:
    """Where the disk comes from: built by the project (`build`) or downloaded (`urls`)."""

    format: str
    build: str = ""  # a disk of the refos build (harness.registry.BUILT_DISKS)
    urls: tuple[str, ...] = ()
    compression: str = "none"
    digest: str = ""  # "sha256:<hex>" when pinned
    checksum_url: str = ""  # an upstream checksum file, when not pinned
    checksum_algorithm: str = ""
    signature_url: str = ""  # a clearsigned checksum file, or a detached signature of the file
    signature_key: str = ""  # the vendor's public key, a path in the repo (images/keys/)
    max_mib: int = 0  # largest unpacked image expected; 0: HARNESS_IMAGE_MAX_MIB's default
    member: str = ""  # the file inside an archive (the vmdk inside an OVA)
    env: str = ""  # environment variable naming a local file to use instead
    # A moving target (STREAMS): `stream_url` names the current version, which then
    # fills `{version}` in `urls` and `checksum_url` (or, for Fedora CoreOS, gives them).
    stream: str = ""
    stream_url: str = ""


@dataclass(frozen=True)
class Boot:
    firmware: str
    memory_mib: int
    ssh_user: str
    seed: str
    # Commands that return once the guest says its boot is finished.
    ready: tuple[str, ...] = ()
    # How the seed format is written for this release (harness.seed.WRITERS):
    # ignition_spec, fw_cfg, dialect (config-2), route (rancher).
    seed_options: dict[str, str] = field(default_factory=dict)
    # Waits this distro needs longer than the harness's own (harness.vm.timeouts
    # PER_DISTRO), in KVM seconds; the accelerator scales them as it scales the rest.
    timeouts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Promises:
    docker: str
    init: str
    update: str
    docker_unit: str = ""
    readonly: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    auto_fallback: bool = False
    # What the update mechanism updates, where the mechanism alone cannot tell (snap:
    # the snap that stands for the system); "" for the mechanism's own choice.
    update_target: str = ""
    # The systemd unit that runs a cluster member's etcd once its first-boot config
    # (harness.cluster_configs) sets it up; "" where no etcd member is promised.
    etcd_unit: str = ""
    # Why a promise is absent, in the distro's own terms (shown as skip reasons).
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Distro:
    name: str
    title: str
    family: str
    image: Image
    boot: Boot
    promises: Promises
    sources: tuple[str, ...] = ()
    # Facts not confirmed, one per item as "field: why" (e.g. "image.digest: host gone").
    unverified: tuple[str, ...] = ()

    @property
    def builtin(self) -> bool:
        return bool(self.image.build)


NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # also a folder and a volume name
ENV = re.compile(r"HARNESS_IMAGE_[A-Z0-9_]+")
MAX_EXTENDS = 16  # a longer chain is a mistake (and would exhaust Python's recursion)


def load(path: Path = CATALOG) -> dict[str, Distro]:
    """Every entry of the catalog file, validated; CatalogError naming the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CatalogError(f"{path}: not valid UTF-8 TOML: {e}") from None
    except OSError as e:
        raise CatalogError(f"{path}: cannot be read: {e.strerror}") from None
    if not data:
        raise CatalogError(f"{path}: the catalog has no entries")
    found = {}
    for name in data:
        where = f"{path}: entry '{name}'"
        if not NAME.fullmatch(name):
            raise CatalogError(f"{where}: a distro name is lowercase letters, digits and '-'")
        found[name] = _build(Distro, _extended(data, name, where), where, {"name": name})
        _check_registries(found[name], where)
    return found


def _extended(data: dict, name: str, where: str, seen: tuple[str, ...] = ()) -> dict:
    """The entry's table with the tables of the entry it `extends` merged under it."""
    entry = data[name]
    if not isinstance(entry, dict) or "extends" not in entry:
        return entry
    base = entry["extends"]
    if not isinstance(base, str):
        raise CatalogError(f"{where}: field 'extends' is {base!r}: it names one entry, as "
                           "a string (extends = \"other\")")
    if len(seen) >= MAX_EXTENDS:
        raise CatalogError(f"{where}: field 'extends' starts a chain deeper than "
                           f"{MAX_EXTENDS} entries ({' -> '.join((*seen[:3], '...', name))}); "
                           "extend the base entry directly")
    if base not in data or base in (*seen, name):
        raise CatalogError(f"{where}: field 'extends' names {base!r}, which is "
                           + ("part of a loop" if base in data else "not an entry"))
    merged = _merge(_extended(data, base, where, (*seen, name)), entry)
    merged.pop("extends")
    return merged


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and \
            isinstance(out.get(key), dict) else value
    return out


def _check_registries(d: Distro, where: str) -> None:
    """What the entry asks for must exist in the harness: a seed writer (and its
    options), an update adapter, a build artifact."""
    try:
        seed.check_options(d.boot.seed, d.boot.seed_options)
    except seed.SeedError as e:
        raise CatalogError(f"{where}: field 'boot.seed': {e}") from None
    if d.promises.update not in registry.update_mechanisms():
        raise CatalogError(f"{where}: field 'promises.update' is {d.promises.update!r}, "
                           f"expected one of {', '.join(registry.update_mechanisms())}")
    if d.image.build and d.image.build not in registry.BUILT_DISKS:
        raise CatalogError(f"{where}: field 'image.build' is {d.image.build!r}, expected "
                           f"one of {', '.join(registry.BUILT_DISKS)}")
    if d.image.env and (not ENV.fullmatch(d.image.env) or d.image.env in settings.SETTINGS):
        raise CatalogError(f"{where}: field 'image.env' is {d.image.env!r}: it must be "
                           "HARNESS_IMAGE_ and capitals, digits or '_'")


def _build(cls: type, data: object, where: str, extra: dict | None = None, prefix: str = ""):
    """Make `cls` from a TOML table, checking names and types field by field."""
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: field '{prefix.rstrip('.') or 'entry'}' must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields or (extra and key in extra):
            raise CatalogError(f"{where}: unknown field '{prefix}{key}'")
    values = dict(extra or {})
    for name, f in fields.items():
        if name in values:
            continue
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CatalogError(f"{where}: missing field '{prefix}{name}'")
            continue
        values[name] = _value(hints[name], data[name], where, prefix + name)
    obj = cls(**values)
    _check_choices(obj, where, prefix)
    return obj


def _value(hint, value, where: str, name: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, prefix=name + ".")
    origin = typing.get_origin(hint)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        if not isinstance(value, list):
            raise CatalogError(f"{where}: field '{name}' must be a list of tables")
        return tuple(_value(typing.get_args(hint)[0], v, where, f"{name}[{i}]")
                     for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CatalogError(f"{where}: field '{name}' must be a list of strings")
        return tuple(value)
    if origin is dict:
        kind = typing.get_args(hint)[1]
        if not isinstance(value, dict) or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in value.values()):
            words = "strings" if kind is str else "whole numbers"
            raise CatalogError(f"{where}: field '{name}' must be a table of {words}")
        return dict(value)
    expected = hint if not isinstance(hint, types.UnionType) else hint.__args__
    if not isinstance(value, expected) or (hint is int and isinstance(value, bool)):
        raise CatalogError(
            f"{where}: field '{name}' must be {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


_CHOICES = {
    (Image, "format"): FORMATS,
    (Image, "compression"): COMPRESSION,
    (Image, "stream"): STREAMS,
    (Image, "checksum_algorithm"): CHECKSUM_ALGORITHMS,
    (Boot, "firmware"): FIRMWARE,
    (Promises, "docker"): DOCKER_START,
}


def _check_choices(obj, where: str, prefix: str) -> None:
    for (cls, name), allowed in _CHOICES.items():
        if isinstance(obj, cls) and getattr(obj, name) not in allowed:
            raise CatalogError(
                f"{where}: field '{prefix}{name}' is {getattr(obj, name)!r}, "
                f"expected one of {', '.join(allowed)}")
    if isinstance(obj, Image):
        _check_image(obj, where, prefix)
    if isinstance(obj, Distro):
        _check_verifiable(obj, where)
        _check_sources(obj, where)
    if isinstance(obj, Boot) and obj.memory_mib < 256:
        raise CatalogError(f"{where}: field '{prefix}memory_mib' is {obj.memory_mib}, below 256")
    if isinstance(obj, Boot):
        _check_timeouts(obj, where, prefix)


def _check_timeouts(boot: Boot, where: str, prefix: str) -> None:
    """boot.timeouts names waits of a boot, each a positive number of KVM seconds."""
    from harness.vm.timeouts import PER_DISTRO

    for name, seconds in boot.timeouts.items():
        if name not in PER_DISTRO:
            raise CatalogError(f"{where}: field '{prefix}timeouts.{name}' is not a timeout "
                               f"a distro may set; expected one of {', '.join(PER_DISTRO)}")
        if seconds <= 0:
            raise CatalogError(f"{where}: field '{prefix}timeouts.{name}' is {seconds}; give "
                               "the seconds the wait takes under KVM (scaled under TCG)")


def _check_image(img: Image, where: str, prefix: str) -> None:
    """A downloaded image needs a way to be found and a way to be verified."""
    def bad(name: str, why: str) -> CatalogError:
        return CatalogError(f"{where}: field '{prefix}{name}' {why}")

    if img.build:
        return
    if not img.urls and img.stream != "fedora-coreos":
        raise bad("urls", "is empty and no 'build' or 'stream' gives them")
    if img.stream and not img.stream_url:
        raise bad("stream_url", f"is empty but stream is {img.stream!r}")
    if not img.stream and any("{version}" in u for u in (*img.urls, img.checksum_url,
                                                          img.signature_url)):
        raise bad("urls", "use {version} but no 'stream' resolves it")
    if img.digest:
        algorithm, _, hexdigest = img.digest.partition(":")
        if _HEX_WIDTH.get(algorithm) != len(hexdigest) or not _is_hex(hexdigest):
            raise bad("digest", f"is {img.digest!r}, expected '<sha256|sha512|sha1>:<hex>'")
    if img.checksum_url and not img.checksum_algorithm:
        raise bad("checksum_algorithm", "is empty but checksum_url is given")
    if img.format == "ova" and not img.member:
        raise bad("member", "is empty: an OVA needs the name (or glob) of its disk")
    if img.signature_url and not img.signature_key:
        raise bad("signature_key", "is empty but signature_url is given: name the vendor's "
                  "public key kept in the repo (images/keys/)")
    if img.signature_key and not key_path(img).is_file():
        raise bad("signature_key", f"names {img.signature_key}, which is not a file")
    if img.max_mib < 0:
        raise bad("max_mib", f"is {img.max_mib}; give a size in MiB, or 0 for the default")


def key_path(img: Image) -> Path:
    """The signature key's file: a relative path is relative to the repo."""
    return REPO / img.signature_key if img.signature_key else Path()


def _check_verifiable(d: Distro, where: str) -> None:
    """A download with no way to check its bytes must say so in `unverified`."""
    img = d.image
    if img.build or img.digest or img.checksum_url or img.stream == "fedora-coreos":
        return
    if not any(u.split(":", 1)[0].strip() == "image.digest" for u in d.unverified):
        raise CatalogError(f"{where}: field 'image.digest' is empty: pin it, give a "
                           "checksum_url, or list 'image.digest' in unverified")


# A source a reader can open: a URL, "owner/repo path @ commit-or-tag", or
# "owner/repo commit SHA", each optionally followed by what it shows.
_UPSTREAM = re.compile(r"(https?://\S+|[\w.-]+/[\w.-]+ (\S+ @ [\w.+-]+|commit [0-9a-f]{7,40}))"
                       r"( .*)?")


def _check_sources(d: Distro, where: str) -> None:
    """Downloaded distros cite upstream; a path of this machine cites nothing another
    reader can open. Built-in entries cite files of this repository."""
    for source in d.sources:
        if source.startswith(("/", "~", "file:")) or \
                (not d.builtin and not _UPSTREAM.fullmatch(source)):
            raise CatalogError(
                f"{where}: field 'sources' has {source!r}: cite the upstream source as a URL "
                "or as 'owner/repo path @ commit-or-tag (what it shows)', not a local file")
        if d.builtin and not source.startswith("http") and not (REPO / source).is_file():
            raise CatalogError(f"{where}: field 'sources' has {source!r}, no file of this "
                               "repository")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def get(name: str, catalog: dict[str, Distro] | None = None) -> Distro:
    catalog = catalog if catalog is not None else load()
    if name not in catalog:
        raise CatalogError(f"unknown distro '{name}'; known: {', '.join(sorted(catalog))}")
    return catalog[name]

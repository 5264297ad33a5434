"""Saves that outlive the run: a warm cache of booted, saved machines.

A save made by one pytest session is kept in the cache (`cache_dir()/saves/<key>`)
so the next session restores it in seconds instead of booting. The key names
everything a restore depends on (`cache_key`): the machine spec (base image hash, seed
format, extra configuration), what shapes the guest (the first-boot documents in
seeds/ and the code that makes, boots, readies, saves and restores it: every file
of harness/vm and harness/seed), the catalog's boot settings, the QEMU and libvirt
versions, the canonical machine type and the accelerator. A changed input is a new
key, so never a wrong restore.

An entry holds the memory image and what the guest was given (its SSH client
key, its host key, the host keys it was trusted with), in a 0700 folder with
0600 files; its frozen disk, NVRAM and seed are pool volumes named
`save-<tag>-<key>.*` (the tag names the cache folder: the pool is shared by
every cache on the host), which no sweep of a run touches (only eviction and
`harness clean --saves` remove them).

Parallel sessions: libvirt restores a save only under the name and UUID stored
in it (`restoreFlags` with another UUID in the XML is refused: qemuSaveImageUpdateDef
checks it with virDomainDefCheckABIStability, src/conf/domain_conf.c; seen with 9.0), and
`virDomainSaveImageDefineXML` applies the same check. So each session restores
from its own copy of the memory image, in its run folder, with the name and
UUID in the copy's XML rewritten in place to ones of its own, at equal length
(the header is libvirt's `virQEMUSaveHeader`, src/qemu/qemu_saveimage.h at
v9.0.0: magic, version, data_len, was_running, compressed (renamed format
later), cookieOffset, unused[14]; the XML follows it, inside data_len). Copying, not waiting: two
sessions start warm at once, and the copy is the run's, swept with it.

Locks (flock, die with the process): `<key>.make.lock` is held while an entry is
looked up or made (a second session wanting the same save waits for the first
one's cold boot instead of booting too); `<key>.use.lock` is held shared while a
session uses the entry; eviction and clean take both without waiting and leave
an entry in use alone. The cache is bounded by HARNESS_SAVE_CACHE_MAX_MIB;
least recently used entries go first.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse
from xml.etree import ElementTree as ET

import libvirt

from harness import settings
from harness.log import log
from harness.paths import REPO, cache_dir, check_trusted_path, make_dirs, private_mkdir
from harness.seed.base import Media
from harness.seed.keys import KeyPair
from harness.vm import storage
from harness.vm.accel import tb_cache_mib

VOLUME_PREFIX = "save-"
# libvirt src/qemu/qemu_saveimage.h (v9.0.0): struct _virQEMUSaveHeader, host byte order.
HEADER = struct.Struct("=16s19I")
MAGIC = b"LibvirtQemudSave"
# What shapes a saved guest besides its image and the catalog: the first-boot documents,
# and the code that writes seeds, builds the domain, boots, readies, saves and restores
# (harness/vm and harness/seed, whole: a module added there is in the key without
# anyone listing it; an edit there costs one cold boot per distro, a missed one a
# wrong restore). Fetching, reports, the plugin and the CLI are outside: they never
# touch a guest before it is saved.
GUEST_SHAPERS = ("seeds", "harness/vm", "harness/seed")
KEY_FILES = ("id_ed25519", "id_ed25519.pub", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub")


class SaveFormatError(RuntimeError):
    """A memory image that is not the libvirt save format the copy knows."""


def guest_digest(repo: Path = REPO) -> str:
    """Hash of every file under GUEST_SHAPERS in `repo` (path and bytes; no bytecode)."""
    h = hashlib.sha256()
    for top in GUEST_SHAPERS:
        for path in sorted((repo / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                data = path.read_bytes()
                h.update(f"{path.relative_to(repo)}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def machine_type(conn: libvirt.virConnect, accel: str) -> str:
    """The canonical machine type libvirt expands `pc` to (e.g. pc-i440fx-7.2)."""
    try:
        caps = conn.getDomainCapabilities(None, "x86_64", "pc",
                                          "kvm" if accel == "kvm" else "qemu", 0)
    except libvirt.libvirtError:
        return "pc"
    return ET.fromstring(caps).findtext("machine") or "pc"


def key_inputs(conn: libvirt.virConnect, spec, accel: str, repo: Path = REPO) -> dict:
    """Everything a restore of a save depends on. The machine spec's key covers the base
    image's hash, the seed format and the extra configuration; `code` what shapes the
    guest in `repo` (GUEST_SHAPERS); `tb_cache_mib` the TCG cache the saved QEMU had."""
    return {"spec": spec.key(), "boot": asdict(spec.distro.boot),
            "code": guest_digest(repo), "qemu": conn.getVersion(), "libvirt": conn.getLibVersion(),
            "machine": machine_type(conn, accel), "accel": accel,
            "tb_cache_mib": tb_cache_mib(accel)}


def digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()
                          ).hexdigest()[:20]


def cache_key(conn: libvirt.virConnect, spec, accel: str, repo: Path = REPO) -> str:
    return digest(key_inputs(conn, spec, accel, repo))


def persistable(conn: libvirt.virConnect, media: Media | None) -> bool:
    """Kept across runs only on this host's libvirt (the memory image is a path libvirtd
    opens) and without fw_cfg files (QEMU reopens them from the template's run)."""
    local = not urlparse(conn.getURI()).hostname
    return local and settings.get("HARNESS_SAVE_CACHE_MAX_MIB") > 0 and \
        (media is None or not media.fw_cfg)


@dataclass
class Template:
    """What a restored machine takes over from the machine that was saved: the
    keys baked into the guest, its seed's login facts, its boot timings."""

    name: str
    hostname: str
    client_key: KeyPair
    host_key: KeyPair | None
    seed: Media
    timings: dict[str, float]
    trusted: list[tuple[str, str]]
    spec: object = None
    dir: Path | None = None

    def trusted_keys(self) -> list[tuple[str, str]]:
        return list(self.trusted)


def session_copy(source: Path, dest: Path, xml: str, new_name: str) -> tuple[str, str]:
    """Copy a memory image with its domain name and UUID replaced (equal lengths, in
    the XML region only); the copy's XML and name. Raises SaveFormatError."""
    root = ET.fromstring(xml)
    old_name, old_uuid = root.findtext("name"), root.findtext("uuid")
    if len(new_name) != len(old_name):
        raise SaveFormatError(f"{new_name}: not as long as the saved name {old_name}")
    pairs = [(f"<name>{old_name}</name>", f"<name>{new_name}</name>"),
             (f"<uuid>{old_uuid}</uuid>", f"<uuid>{uuid.uuid4()}</uuid>")]
    shutil.copyfile(source, dest)
    os.chmod(dest, 0o600)
    with open(dest, "r+b") as f:
        magic, version, data_len, *_ = HEADER.unpack(f.read(HEADER.size))
        if magic != MAGIC or version != 2:
            raise SaveFormatError(f"{source}: not a libvirt save image of version 2")
        region = f.read(data_len)
        for old, new in pairs:
            if region.count(old.encode()) != 1:
                raise SaveFormatError(f"{source}: {old} is not once in the saved XML")
            region = region.replace(old.encode(), new.encode())
            xml = xml.replace(old, new)
        f.seek(HEADER.size)
        f.write(region)
    return xml, new_name


def _flock(path: Path, mode: int) -> int | None:
    """An fd holding `mode` on `path`, or None when LOCK_NB and someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _set_aside_if_foreign(root: Path) -> None:
    """A save folder another user owns (a cache handed between users, as a CI cache
    restored under another uid) is rebuilt, not trusted and not chowned: anything in
    it may be theirs. It is renamed aside, never read or deleted, and a new one made."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode) or st.st_uid == os.geteuid():
        return  # ours, or a symlink or a file: private_mkdir refuses those
    aside = root.with_name(f"{root.name}.uid{st.st_uid}.{int(time.time())}")
    root.rename(aside)
    log.warning("saves: %s was owned by uid %d, not by this process (uid %d): rebuilt "
                "(the old folder is set aside as %s, never read; remove it when done)",
                root, st.st_uid, os.geteuid(), aside)


class SaveCache:
    """The warm cache on one libvirt connection; `close()` releases its locks."""

    def __init__(self, conn: libvirt.virConnect, root: Path | None = None):
        self.conn = conn
        root = root or cache_dir() / "saves"
        make_dirs(root.parent, 0o700)
        # Keys and memory images go in here: a plain folder of ours nobody else can write,
        # below folders nobody else can change (so it cannot be swapped once checked).
        root = check_trusted_path(root.parent, "HARNESS_CACHE") / root.name
        _set_aside_if_foreign(root)
        self.root = private_mkdir(root, 0o700, "HARNESS_CACHE")
        self._use: dict[str, int] = {}
        # The pool is shared by every cache folder on the host (users, CI jobs, tests):
        # volume names carry this folder's tag, so no cache takes another's volumes.
        self.tag = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]

    # -- paths -----------------------------------------------------------------

    def entry(self, key: str) -> Path:
        return self.root / key

    def volume(self, key: str, kind: str) -> str:
        return f"{VOLUME_PREFIX}{self.tag}-{key}.{kind}"

    def _lock(self, key: str, kind: str, mode: int) -> int | None:
        return _flock(self.root / f"{key}.{kind}.lock", mode)

    # -- use -------------------------------------------------------------------

    def making(self, key: str) -> int:
        """Hold the key's make lock (blocking: another session may be making it)."""
        return self._lock(key, "make", fcntl.LOCK_EX)

    def done_making(self, fd: int) -> None:
        os.close(fd)

    def load(self, key: str) -> dict | None:
        """The entry's record, marked used (shared lock until close), or None."""
        try:
            meta = json.loads((self.entry(key) / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        if key not in self._use:
            self._use[key] = self._lock(key, "use", fcntl.LOCK_SH)
        os.utime(self.entry(key) / "meta.json")  # least recently used goes first
        return meta

    def template(self, key: str, meta: dict, spec) -> Template:
        keys = self.entry(key) / "keys"
        host = KeyPair(keys / KEY_FILES[2], meta["host_public"]) if meta["host_public"] else None
        seed = Media(files={}, host_key_given=meta["host_key_given"],
                     password_login=tuple(meta["password_login"]) if meta["password_login"]
                     else None)
        return Template(meta["template"], meta["hostname"],
                        KeyPair(keys / KEY_FILES[0], meta["client_public"]), host, seed,
                        meta["timings"], [tuple(k) for k in meta["trusted"]], spec,
                        self.entry(key))

    def keep(self, key: str, saved, machine) -> dict | None:
        """Move a fresh save of `machine` into the cache (the caller holds the make lock);
        its record, or None when it does not fit under the size limit."""
        limit = settings.get("HARNESS_SAVE_CACHE_MAX_MIB") * 2**20
        p = storage.pool(self.conn)
        storage.refresh(p)  # libvirt, not the pool API, made the NVRAM file
        sizes = saved.file.stat().st_size + sum(
            p.storageVolLookupByName(machine.volume(k)).info()[2]
            for k in self._kinds(saved, machine))
        if sizes > limit:
            log.warning("save of %s (%d MiB) is larger than HARNESS_SAVE_CACHE_MAX_MIB: "
                        "kept for this run only", machine.name, sizes // 2**20)
            return None
        if not self.discard(key, locked=True):
            log.warning("saves: %s is in use by another session: this one is kept for "
                        "this run only", key)
            return None
        self.evict(limit - sizes)
        entry = self.entry(key)
        entry.mkdir(mode=0o700)
        (entry / "keys").mkdir(mode=0o700)
        for name in KEY_FILES:
            if (src := machine.dir / "keys" / name).exists():
                shutil.copyfile(src, entry / "keys" / name)
                os.chmod(entry / "keys" / name, 0o600)
        shutil.move(saved.file, entry / "memory.save")
        os.chmod(entry / "memory.save", 0o600)
        for kind in self._kinds(saved, machine):
            _rename_volume(self.conn, machine.volume(kind), self.volume(key, kind))
        meta = {"template": machine.name, "hostname": machine.hostname, "xml": saved.xml,
                "domain_name": saved.domain_name, "vsize": saved.vsize, "size": sizes,
                "nvram": bool(saved.nvram_volume), "seed": bool(machine.seed.disk),
                "client_public": machine.client_key.public,
                "host_public": machine.host_key.public if machine.host_key else "",
                "host_key_given": machine.seed.host_key_given,
                "password_login": machine.seed.password_login,
                "timings": machine.timings, "trusted": machine.trusted_keys(),
                "created": time.time()}
        tmp = entry / "meta.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f)
        tmp.rename(entry / "meta.json")  # last: an entry without it is not one
        return self.load(key)

    @staticmethod
    def _kinds(saved, machine) -> list[str]:
        return ["disk.qcow2", *(["VARS.fd"] if saved.nvram_volume else []),
                *(["seed.iso"] if machine.seed and machine.seed.disk else [])]

    # -- removal ---------------------------------------------------------------

    def discard(self, key: str, locked: bool = False) -> bool:
        """Remove an entry and its volumes unless another session uses it (or makes
        it, unless the caller holds the make lock: `locked`)."""
        make = None if locked else self._lock(key, "make", fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not locked and make is None:
            return False
        try:
            mine = self._use.pop(key, None)
            if mine is not None:
                os.close(mine)
            use = self._lock(key, "use", fcntl.LOCK_EX | fcntl.LOCK_NB)
            if use is None:
                return False
            try:
                storage.delete_volumes(self.conn, self.volume(key, ""))
                shutil.rmtree(self.entry(key), ignore_errors=True)  # never follows symlinks
            finally:
                os.close(use)
            return True
        finally:
            if make is not None:
                os.close(make)

    def entries(self) -> list[tuple[float, str, int]]:
        """(last used, key, bytes) of every complete entry, least recently used first."""
        found = []
        for meta in self.root.glob("*/meta.json"):
            try:
                found.append((meta.stat().st_mtime, meta.parent.name,
                              int(json.loads(meta.read_text())["size"])))
            except (OSError, ValueError, KeyError):
                continue
        return sorted(found)

    def evict(self, budget: int) -> list[str]:
        """Remove least recently used entries not in use until they fit in `budget` bytes."""
        found = self.entries()
        total, gone = sum(size for _, _, size in found), []
        for _, key, size in found:
            if total <= budget:
                break
            if key not in self._use and self.discard(key):
                total -= size
                gone.append(key)
                log.info("saves: evicted %s (%d MiB, least recently used)", key, size // 2**20)
        return gone

    def clear(self) -> tuple[list[str], list[str]]:
        """Every entry not in use, and stray `save-` volumes of no entry; (removed, busy)."""
        removed, busy = [], []
        for _, key, _ in self.entries():
            (removed if self.discard(key) else busy).append(key)
        p = storage.pool(self.conn)
        storage.refresh(p)
        strays = {m[1] for vol in p.listAllVolumes(0)
                  if (m := re.fullmatch(rf"{VOLUME_PREFIX}{self.tag}-([0-9a-f]+)\..+",
                                        vol.name()))}
        strays |= {d.name for d in self.root.iterdir() if d.is_dir()}  # a keep cut short
        for key in strays - set(removed) - set(busy):
            if not (self.entry(key) / "meta.json").exists() and self.discard(key):
                removed.append(key)
        return sorted(set(removed)), busy

    def close(self) -> None:
        for fd in self._use.values():
            os.close(fd)
        self._use.clear()


def _rename_volume(conn: libvirt.virConnect, old: str, new: str) -> None:
    """Give a pool volume a new name (a file rename in this host's directory pool:
    libvirt has no rename; the qcow2 keeps its backing file)."""
    p = storage.pool(conn)
    path = Path(p.storageVolLookupByName(old).path())
    path.rename(path.with_name(new))
    storage.refresh(p)

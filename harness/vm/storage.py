"""Disks as libvirt storage volumes, so the same code serves a local and a remote host.

A base image is uploaded once into the `harness` pool (through the libvirt
stream API, not by path) and never written again; each VM gets a qcow2 overlay
volume backed by it, and its seed is uploaded as a volume of its own. Volumes
made for a run carry the run id in their names, which is what cleanup matches.
"""

import json
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt
import tenacity

from harness import safefs
from harness.log import step
from harness.paths import cache_dir

POOL = "harness"
POOL_DIR = "/var/lib/libvirt/images/harness"
CHUNK = 4 * 1024 * 1024
# libvirt refuses to re-read a pool while any client builds, copies or uploads a volume
# in it (storagePoolRefresh in src/storage/storage_driver.c says this).
BUSY = "has asynchronous jobs running"
BUSY_PATIENCE = 600.0  # seconds: a multi-GiB base upload by another run


def pool(conn: libvirt.virConnect) -> libvirt.virStoragePool:
    """The harness's directory pool, defined and started on first use."""
    try:
        p = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        root = ET.Element("pool", type="dir")
        ET.SubElement(root, "name").text = POOL
        ET.SubElement(ET.SubElement(root, "target"), "path").text = POOL_DIR
        p = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
        p.build(0)
        p.setAutostart(1)
    if not p.isActive():
        p.create(0)
    return p


def _volume_xml(name: str, capacity: int, fmt: str, backing: str | None = None) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(ET.SubElement(root, "target"), "format", type=fmt)
    if backing:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", type="qcow2")
    return ET.tostring(root, encoding="unicode")


def _lookup(p: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return p.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def upload(p: libvirt.virStoragePool, name: str, source: Path) -> libvirt.virStorageVol:
    """Copy a local file into a new raw volume through the libvirt stream API.

    A failed upload deletes the volume, so a half-written volume never stays."""
    size = source.stat().st_size
    vol = p.createXML(_volume_xml(name, size, "raw"), 0)
    conn = p.connect()
    try:
        stream = conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        with open(source, "rb") as f:
            stream.sendAll(lambda _s, n, fh: fh.read(min(n, CHUNK)), f)
        stream.finish()
    except BaseException:
        vol.delete(0)
        raise
    return vol


def base_volume(conn: libvirt.virConnect, image: Path, key: str) -> tuple[str, int]:
    """Path and virtual size of the pool's copy of a qcow2 base image.

    `key` names the content (a digest or recipe hash). A marker volume is
    created after the upload completed, so an upload killed half way is
    redone, not used."""
    p = pool(conn)
    name, marker = f"base-{key}.qcow2", f"base-{key}.complete"
    vsize = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)],
        check=True, capture_output=True, text=True).stdout)["virtual-size"]
    # Sessions sharing this cache folder (one user's parallel runs) upload a base once;
    # the lock is the cache's like any other: ours, never opened through a symlink.
    locks = safefs.folder(cache_dir() / "locks", cache_dir())
    assert locks is not None  # made when missing
    with safefs.locked(locks / f"base-{key}.lock", cache_dir()):
        if _lookup(p, marker) is None:
            if stale := _lookup(p, name):
                stale.delete(0)
            mib = image.stat().st_size / 2**20
            with step(f"upload {image.name} ({mib:.0f} MiB) to pool {POOL}", "storage"):
                upload(p, name, image)
            p.createXML(_volume_xml(marker, 0, "raw"), 0)
    return p.storageVolLookupByName(name).path(), vsize


def _busy(e: BaseException) -> bool:
    return isinstance(e, libvirt.libvirtError) and BUSY in str(e)


def refresh(p: libvirt.virStoragePool, patience: float = BUSY_PATIENCE) -> None:
    """Re-read the pool's folder, waiting out another run's volume job.

    Two runs share the pool: one starting (its sweep) while the other uploads a
    base or creates an overlay must wait, not fail. Any other error is raised."""
    tenacity.Retrying(
        retry=tenacity.retry_if_exception(_busy),
        stop=tenacity.stop_after_delay(patience),
        wait=tenacity.wait_random(0.05, 0.5),
        reraise=True,
    )(p.refresh, 0)


def create_marker(p: libvirt.virStoragePool, name: str) -> None:
    """An empty volume whose name is the record (here: a run's owner)."""
    p.createXML(_volume_xml(name, 0, "raw"), 0)


def overlay(conn: libvirt.virConnect, name: str, backing: str, capacity: int) -> str:
    """A new qcow2 volume over `backing`; the base is never written."""
    vol = pool(conn).createXML(_volume_xml(name, capacity, "qcow2", backing), 0)
    return vol.path()


def delete(vol: libvirt.virStorageVol) -> bool:
    """Delete a volume; False when it was gone already (another sweep of the shared
    pool removed it since it was listed: not an error). Any other error is raised."""
    try:
        vol.delete(0)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise
    return True


def delete_volumes(conn: libvirt.virConnect, prefix: str) -> list[str]:
    """Delete every volume whose name starts with `prefix`; returns the names it removed."""
    p = pool(conn)
    refresh(p)
    return [vol.name() for vol in p.listAllVolumes(0)
            if vol.name().startswith(prefix) and delete(vol)]


def volume_path(conn: libvirt.virConnect, name: str) -> str:
    return pool(conn).storageVolLookupByName(name).path()


def capacity(conn: libvirt.virConnect, name: str) -> int:
    return pool(conn).storageVolLookupByName(name).info()[1]


def clone(conn: libvirt.virConnect, source: str, name: str) -> str:
    """A copy of a volume (through libvirt, so it works on a remote host); its path."""
    p = pool(conn)
    refresh(p)  # libvirt itself, not the API, made some files (a domain's NVRAM)
    src = p.storageVolLookupByName(source)
    return p.createXMLFrom(_volume_xml(name, src.info()[1], "raw"), src, 0).path()

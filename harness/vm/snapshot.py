"""Fresh machines in seconds: boot once, save, restore a copy per test.

A booted, ready machine is saved with libvirt (memory and device state to a
file); the disk it had at that moment becomes a frozen qcow2 volume that is
never written again. Each fresh machine is restored from the save onto its own
new overlay over the frozen disk, with its own port forward, NVRAM copy and
console log, in seconds instead of a boot.

libvirt restores a save only under the domain's original name and UUID, so one
save serves one running copy at a time: `Templates.restore()` first removes the
copy that holds the identity. Saves outlive the run in the warm cache
(harness.vm.savecache): a session restores from its own copy of a kept save,
under a name and UUID of its own, so parallel sessions never collide.
After a restore the guest's clock is set from the host's; its boot id is the
template's, so tests that need a real boot still call `reboot()`.
"""

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt

from harness.log import log, step
from harness.vm import domain, runs, savecache, storage


@dataclass
class Saved:
    """One saved machine: everything a restore needs, owned until close()."""

    key: str
    file: Path
    xml: str
    domain_name: str
    disk_path: str
    vsize: int
    nvram_volume: str
    volume_prefix: str  # the run's volumes this save owns; "" when the cache owns them
    template: object  # the Machine that was saved, or a savecache.Template
    seconds: float
    seed_volume: str = ""
    warm: bool = False  # restored from the cache, not saved in this run

    def close(self, conn: libvirt.virConnect) -> None:
        if self.volume_prefix:
            storage.delete_volumes(conn, self.volume_prefix)
        self.file.unlink(missing_ok=True)


def save(machine, key: str) -> Saved:
    """Save a ready machine; the machine is stopped and its volumes pass to the Saved."""
    dest = machine.save_path()
    started = time.monotonic()
    with step(f"save memory image ({machine.distro.boot.memory_mib} MiB guest)", machine.name):
        machine.res.domain.save(str(dest))
    xml = machine.conn.saveImageGetXMLDesc(str(dest), libvirt.VIR_DOMAIN_XML_SECURE)
    root = ET.fromstring(xml)
    prefix = machine.res.volumes.pop()  # frozen disk, seed and NVRAM now belong to the save
    machine.res.domain = None
    machine.destroy()
    nvram = root.find("os/nvram")
    return Saved(key=key, file=dest, xml=xml, domain_name=root.findtext("name"),
                 disk_path=storage.volume_path(machine.conn, machine.volume("disk.qcow2")),
                 vsize=storage.capacity(machine.conn, machine.volume("disk.qcow2")),
                 nvram_volume=Path(nvram.text).name if nvram is not None else "",
                 volume_prefix=prefix, template=machine,
                 seconds=round(time.monotonic() - started, 2),
                 seed_volume=machine.volume("seed.iso") if machine.seed.disk else "")


def restore_xml(spec: domain.DomainSpec, saved_xml: str) -> str:
    """The XML a save is restored with: the harness's own domain for the machine,
    built from its domain spec (`spec`, named as the save is), with only the saved
    domain's UUID taken over, because libvirt restores a save under its own name and
    UUID alone. Nothing else of the XML in the save file is used: libvirt's ABI
    check lets a restore XML add host devices, file systems, disks and QEMU
    arguments, so a save written by another hand could otherwise bring them."""
    root = ET.fromstring(saved_xml)
    if root.findtext("name") != spec.name:
        raise savecache.SaveFormatError(
            f"the save's domain is {root.findtext('name')!r}, not {spec.name!r}")
    try:
        saved_uuid = str(uuid.UUID(root.findtext("uuid") or ""))
    except ValueError:
        raise savecache.SaveFormatError("the save's domain has no valid UUID") from None
    mine = ET.fromstring(domain.domain_xml(spec))
    el = ET.Element("uuid")
    el.text = saved_uuid
    mine.insert(list(mine).index(mine.find("name")) + 1, el)
    return ET.tostring(mine, encoding="unicode")


class Templates:
    """Per session: one save per distinct machine spec (`MachineSpec.key()`), taken from
    the warm cache when it holds one (harness.vm.savecache), else made by a cold boot
    and kept there; every machine of that spec is restored from it. Only one copy
    of a save runs at a time in a session: restoring evicts the previous holder."""

    def __init__(self, conn: libvirt.virConnect, cache: "savecache.SaveCache | None" = None,
                 run=None):
        self.conn, self.cache, self.run = conn, cache, run
        self.saves: dict[str, Saved] = {}
        self.holders: dict[str, object] = {}
        self.cache_keys: dict[str, str] = {}
        self.throwaway: set[str] = set()

    def throw_away(self, key: str) -> None:
        """The kept save of machine spec `key` leaves the warm cache when this session
        closes: it was made for this session only (the bench's cold and warm starts)."""
        self.throwaway.add(key)

    def restore(self, key: str, boot_template: Callable[[], object], machine) -> object:
        """`machine`, restored from the save of spec `key`. A save that does not
        restore (a volume or file of it is gone, QEMU changed in place) is said once,
        and replaced by a new cold boot, never silently reused."""
        if key not in self.saves:
            self.saves[key] = self._get(key, boot_template, machine)
        holder = self.holders.get(key)
        if holder is not None and holder.res.domain is not None:
            holder.destroy()
        self.holders[key] = machine
        try:
            return machine.restore(self.saves[key])
        except (libvirt.libvirtError, savecache.SaveFormatError, OSError) as e:
            log.warning("%s: the save of spec %s does not restore (%s); booting cold "
                        "to replace it", machine.name, key, e)
            self._drop(key)
            self.saves[key] = self._get(key, boot_template, machine, fresh=True)
            return machine.restore(self.saves[key])

    def _get(self, key: str, boot_template: Callable[[], object], machine,
             fresh: bool = False) -> Saved:
        """The save from the warm cache, or a new one (kept there when it may be)."""
        if self.cache is None or not savecache.persistable(self.conn, None):
            return save(boot_template(), key)
        if key not in self.cache_keys:  # reads the guest-shaping code and asks libvirt
            self.cache_keys[key] = savecache.cache_key(self.conn, machine.spec, machine.accel)
        ckey = self.cache_keys[key]
        lock = self.cache.making(ckey)  # waits while another session makes this save
        try:
            meta = None if fresh else self.cache.load(ckey)
            if meta is not None:
                log.info("%s: warm start from saved %s", machine.name, ckey)
                try:
                    return self._warm(key, ckey, meta, machine.spec)
                except (savecache.SaveFormatError, OSError, libvirt.libvirtError) as e:
                    log.warning("%s: the kept save %s does not restore (%s); booting cold "
                                "to replace it", machine.name, ckey, e)
                    self.cache.discard(ckey, locked=True)
            template = boot_template()
            saved = save(template, key)
            if not savecache.persistable(self.conn, template.seed) or \
                    (meta := self.cache.keep(ckey, saved, template)) is None:
                return saved
            storage.delete_volumes(self.conn, saved.volume_prefix)  # what was not kept
            return self._warm(key, ckey, meta, machine.spec, template, saved.seconds)
        finally:
            self.cache.done_making(lock)

    def _warm(self, key: str, ckey: str, meta: dict, spec, template=None,
              seconds: float = 0.0) -> Saved:
        """A Saved on this session's own copy of a kept save (its own name and UUID)."""
        old = meta["domain_name"]
        run_part = len(runs.DOMAIN_PREFIX) + len(self.run.id) + 1
        copy = self.run.dir / f"save-{ckey}.save"
        xml, name = savecache.session_copy(self.cache.entry(ckey) / "memory.save", copy,
                                           meta["xml"], self.run.domain_name(old[run_part:]))
        volume = lambda kind: self.cache.volume(ckey, kind)  # noqa: E731
        return Saved(key=key, file=copy, xml=xml, domain_name=name,
                     disk_path=storage.volume_path(self.conn, volume("disk.qcow2")),
                     vsize=meta["vsize"], nvram_volume=volume("VARS.fd") if meta["nvram"] else "",
                     volume_prefix="", seconds=seconds,
                     template=template or self.cache.template(ckey, meta, spec),
                     seed_volume=volume("seed.iso") if meta["seed"] else "", warm=True)

    def _drop(self, key: str) -> None:
        saved = self.saves.pop(key)
        saved.close(self.conn)
        if saved.warm and not self.cache.discard(self.cache_keys[key]):
            log.warning("the broken save %s is in use by another session: left for it",
                        self.cache_keys[key])

    def close(self) -> None:
        for holder in self.holders.values():
            with contextlib.suppress(libvirt.libvirtError):
                holder.destroy()
        for saved in self.saves.values():
            saved.close(self.conn)
        if self.cache is not None:
            for key in sorted(self.throwaway & self.cache_keys.keys()):
                if not self.cache.discard(self.cache_keys[key]):
                    log.warning("the save %s is in use by another session: left for it",
                                self.cache_keys[key])
            self.cache.close()

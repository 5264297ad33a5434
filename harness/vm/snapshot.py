"""Fresh machines in seconds: boot once, save, restore a copy per test.

A booted, ready machine is saved with libvirt (memory and device state to a
file); the disk it had at that moment becomes a frozen qcow2 volume that is
never written again. Each fresh machine is restored from the save onto its own
new overlay over the frozen disk, with its own port forward, NVRAM copy and
console log, in seconds instead of a boot.

libvirt restores a save only under the domain's original name and UUID, so one
save serves one running copy at a time: `Templates.restore()` first removes the
copy that holds the identity. Parallel workers each have their own saves.
After a restore the guest's clock is set from the host's; its boot id is the
template's, so tests that need a real boot still call `reboot()`.
"""

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import libvirt

from harness.log import log, step
from harness.vm import domain, storage


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
    volume_prefix: str
    template: object  # the Machine that was saved (keys, seed, distro)
    seconds: float

    def close(self, conn: libvirt.virConnect) -> None:
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
                 seconds=round(time.monotonic() - started, 2))


def retarget(xml: str, disk_volume: str, nvram: str, console: Path, port: int,
             run_id: str) -> str:
    """The saved XML with this copy's disk, NVRAM, console log and port forward.
    Only what libvirt lets a restore change: nothing of the guest's ABI."""
    root = ET.fromstring(xml)
    for disk in root.iter("disk"):
        if disk.find("target").get("dev") == "vda":
            disk.find("source").set("volume", disk_volume)
            for store in disk.findall("backingStore"):
                disk.remove(store)
    if nvram and (el := root.find("os/nvram")) is not None:
        el.text = nvram
    for tag in ("serial", "console"):
        for dev in root.iter(tag):
            if dev.get("type") == "file":
                dev.find("source").set("path", str(console))
    for arg in root.iter(f"{{{domain.QEMU_NS}}}arg"):
        if arg.get("value", "").startswith("user,id=hn0,"):
            open_net = "restrict=off" in arg.get("value")
            arg.set("value", domain.netdev_arg(port, open_net))
    meta = root.find(f"metadata/{{{domain.HARNESS_NS}}}run")
    if meta is not None:
        meta.set("id", run_id)
    return ET.tostring(root, encoding="unicode")


class Templates:
    """Per session: one cold boot per distinct machine recipe (`Recipe.key()`), saved;
    then every machine of that recipe is restored from the save. Only one copy of
    a save runs at a time: restoring evicts (destroys) the previous holder."""

    def __init__(self, conn: libvirt.virConnect):
        self.conn = conn
        self.saves: dict[str, Saved] = {}
        self.holders: dict[str, object] = {}

    def restore(self, key: str, boot_template: Callable[[], object], machine) -> object:
        """`machine`, restored from the save of recipe `key` (made first by booting a
        template). A save that no longer restores (a volume or file of it is gone)
        is said once and replaced by a new cold boot, never silently reused."""
        if key not in self.saves:
            self.saves[key] = save(boot_template(), key)
        holder = self.holders.get(key)
        if holder is not None and holder.res.domain is not None:
            holder.destroy()
        self.holders[key] = machine
        try:
            return machine.restore(self.saves[key])
        except libvirt.libvirtError as e:
            log.warning("%s: the save of recipe %s does not restore (%s); booting a new "
                        "template to replace it", machine.name, key, e)
            self.saves.pop(key).close(self.conn)
            self.saves[key] = save(boot_template(), key)
            return machine.restore(self.saves[key])

    def close(self) -> None:
        for holder in self.holders.values():
            with contextlib.suppress(libvirt.libvirtError):
                holder.destroy()
        for saved in self.saves.values():
            saved.close(self.conn)

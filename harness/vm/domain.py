"""Libvirt domain XML, composed from small per-device pieces of data.

Networking is QEMU user mode with `restrict=on` (the guest reaches nothing
outside QEMU) and one forward from 127.0.0.1 to the guest's SSH port. libvirt's
own <interface type='user'> cannot say either, so the NIC is passed as QEMU
arguments with an explicit PCI slot that libvirt does not hand out. A cluster
member has a second NIC the same way, on QEMU's `vde` netdev (libvirt has no
VDE interface type), plugged into its cluster's switch (harness.vm.network).

fw_cfg items (Ignition configs) go through libvirt's <sysinfo type='fwcfg'>,
not raw QEMU arguments: libvirt then gives the file to QEMU's user for the
domain's lifetime (measured with libvirt 9.0: a 0600 root file is chowned to
libvirt-qemu while in use and back after), so the file, which carries the
guest's host key, stays private. libvirt 9.0 passes the path to QEMU without
escaping commas, so a path with a comma is refused (FwCfgPathError).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
HARNESS_NS = "urn:container-os-harness:domain"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
NIC_SLOT = "0x1e"
PRIVATE_NIC_SLOT = "0x1d"  # a cluster member's second NIC (harness.vm.network)

ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("harness", HARNESS_NS)


@dataclass(frozen=True)
class Disk:
    pool: str
    volume: str
    target: str  # vda, vdb, ... (virtio); hdc for a CD-ROM
    fmt: str = "qcow2"
    readonly: bool = False
    serial: str = ""
    device: str = "disk"  # or "cdrom": an ISO image, on the IDE bus its boot loader expects


@dataclass(frozen=True)
class DirectBoot:
    """libvirt's direct kernel boot, bypassing firmware and boot loader: for
    distros booted from a kernel and command line, and for fault injection."""

    kernel: str  # paths on the hypervisor host (pool volumes)
    cmdline: str
    initrd: str = ""


@dataclass(frozen=True)
class PrivateNic:
    """A second NIC on a cluster's private network: QEMU's `vde` netdev plugged into
    the switch whose socket folder is `socket_dir` (harness.vm.network), with a fixed
    MAC, in its own PCI slot. The folder is a path on the host that runs QEMU."""

    socket_dir: str
    mac: str
    slot: str = PRIVATE_NIC_SLOT


class PrivateNicError(ValueError):
    """A private NIC QEMU's option parser would misread."""


@dataclass(frozen=True)
class DomainSpec:
    name: str
    run_id: str
    memory_mib: int
    firmware: str  # "uefi" or "bios"
    disks: tuple[Disk, ...]
    console_log: Path
    ssh_port: int
    nvram: Path | None = None
    vcpus: int = 1
    accel: str = "tcg"  # "kvm" or "tcg"
    tb_cache_mib: int = 0  # TCG's translation-block cache (QEMU's tb-size); 0: QEMU's default
    # restrict=off: `--open-network` (harness.vm.session.Options.open_network), for a
    # user's updates from a vendor's server; off by default, never set by the project's tests.
    open_network: bool = False
    fw_cfg: tuple[tuple[str, Path], ...] = ()  # (name, local file): Ignition configs
    direct: DirectBoot | None = None
    # The console as a pty the harness streams (harness.vm.remote), not a file libvirt
    # writes: a file would be written on the hypervisor, where the harness cannot read it.
    console_stream: bool = False
    # Who made it (harness.vm.runs.Owner.attrs()): sweeps tell a live run by it.
    owner: dict[str, str] = field(default_factory=dict)
    # A cluster member's NIC on its private network, besides the user-mode one.
    private_nic: PrivateNic | None = None


class FwCfgPathError(ValueError):
    """A fw_cfg file path QEMU's option parser would split."""


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _os(root: ET.Element, spec: DomainSpec) -> None:
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.firmware == "uefi":
        _sub(os_el, "loader", OVMF_CODE, readonly="yes", type="pflash")
        _sub(os_el, "nvram", str(spec.nvram), template=OVMF_VARS)
    if spec.direct:
        _sub(os_el, "kernel", spec.direct.kernel)
        if spec.direct.initrd:
            _sub(os_el, "initrd", spec.direct.initrd)
        _sub(os_el, "cmdline", spec.direct.cmdline)
    else:
        first = spec.disks[0].device if spec.disks else "disk"
        _sub(os_el, "boot", dev="cdrom" if first == "cdrom" else "hd")


def _disk(devices: ET.Element, disk: Disk) -> None:
    el = _sub(devices, "disk", type="volume", device=disk.device)
    cdrom = disk.device == "cdrom"
    driver = {"name": "qemu", "type": disk.fmt, **({} if cdrom else {"discard": "unmap"})}
    _sub(el, "driver", **driver)
    _sub(el, "source", pool=disk.pool, volume=disk.volume)
    _sub(el, "target", dev=disk.target, bus="ide" if cdrom else "virtio")
    if disk.readonly:
        _sub(el, "readonly")
    if disk.serial:
        _sub(el, "serial", disk.serial)


def disk_xml(disk: Disk) -> str:
    """One disk on its own, for hot-plugging."""
    holder = ET.Element("devices")
    _disk(holder, disk)
    return ET.tostring(holder[0], encoding="unicode")


def _console(devices: ET.Element, log: Path, stream: bool = False) -> None:
    serial = _sub(devices, "serial", type="pty" if stream else "file")
    if not stream:
        _sub(serial, "source", path=str(log), append="off")
    _sub(serial, "target", port="0")


def appending_console(xml: str) -> str:
    """A domain's XML whose console log is appended to rather than started anew: for
    starting the same machine again (a reboot, a power cycle). A streamed console
    (a pty) has no log here and is left as it is."""
    root = ET.fromstring(xml)
    for source in root.findall("devices/serial/source[@path]"):
        source.set("append", "on")
    return ET.tostring(root, encoding="unicode")


def netdev_arg(port: int, open_network: bool = False) -> str:
    restrict = "off" if open_network else "on"
    return f"user,id=hn0,restrict={restrict},hostfwd=tcp:127.0.0.1:{port}-:22"


def private_nic_args(nic: PrivateNic) -> list[str]:
    """QEMU's arguments for a private NIC: `vde` netdev, virtio NIC with its MAC."""
    if not re.fullmatch(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}", nic.mac) or \
            not re.fullmatch(r"0x[0-9a-f]{1,2}", nic.slot) or nic.slot == NIC_SLOT:
        raise PrivateNicError(f"private NIC: MAC {nic.mac!r} or slot {nic.slot!r} is not "
                              "a lowercase MAC and a free PCI slot")
    if "," in nic.socket_dir or not nic.socket_dir.startswith("/"):
        raise PrivateNicError(f"private NIC: switch folder {nic.socket_dir!r} must be an "
                              "absolute path without ',' (QEMU would split the option)")
    return ["-netdev", f"vde,id=lan0,sock={nic.socket_dir}",
            "-device", f"virtio-net-pci,netdev=lan0,mac={nic.mac},bus=pci.0,addr={nic.slot}"]


def _network(root: ET.Element, spec: DomainSpec) -> None:
    cmdline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    args = ["-netdev", netdev_arg(spec.ssh_port, spec.open_network),
            "-device", f"virtio-net-pci,netdev=hn0,bus=pci.0,addr={NIC_SLOT}"]
    if spec.private_nic is not None:
        args += private_nic_args(spec.private_nic)
    for arg in args:
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", value=arg)


def _fw_cfg(root: ET.Element, items: tuple[tuple[str, Path], ...]) -> None:
    if not items:
        return
    sysinfo = _sub(root, "sysinfo", type="fwcfg")
    for name, path in items:
        if "," in str(path) or "," in name:
            raise FwCfgPathError(
                f"fw_cfg item {name} from {path}: a ',' would split QEMU's -fw_cfg option "
                "(libvirt does not escape it); set HARNESS_RUNTIME to a folder without ','")
        _check_reachable(path)
        _sub(sysinfo, "entry", name=name, file=str(path))


def _check_reachable(path: Path) -> None:
    """QEMU runs as another user (libvirt-qemu under qemu:///system) and opens the
    file itself: every folder above it must let others pass (o+x)."""
    for folder in path.parents:
        if folder.exists() and not folder.stat().st_mode & 0o001:
            raise FwCfgPathError(
                f"fw_cfg file {path}: QEMU's user cannot pass {folder} (mode "
                f"{folder.stat().st_mode & 0o7777:04o}); set HARNESS_RUNTIME to a folder "
                "others may traverse (0711), e.g. under /run")


def domain_xml(spec: DomainSpec) -> str:
    root = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(root, "name", spec.name)
    meta = _sub(root, "metadata")
    mine = ET.SubElement(meta, f"{{{HARNESS_NS}}}run")
    mine.set("id", spec.run_id)
    for key, value in spec.owner.items():
        mine.set(key, value)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    _fw_cfg(root, spec.fw_cfg)
    _os(root, spec)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.accel == "tcg" and spec.tb_cache_mib:
        # QEMU passes it as -accel tcg,tb-size=N (libvirt >= 8.0); its default is 1 GiB.
        _sub(_sub(features, "tcg"), "tb-cache", str(spec.tb_cache_mib), unit="MiB")
    _sub(root, "clock", offset="utc")
    # A guest's reset ends its QEMU process (QEMU's -no-reboot), and the harness starts
    # a new one on the same disks (Machine.watchdog): under TCG a reset in the same
    # process left the firmware crawling (docs/design.md, "Reboots").
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "destroy"),
                          ("on_crash", "destroy")):
        _sub(root, event, action)
    devices = _sub(root, "devices")
    # libvirt adds a USB controller to machine `pc` unless told not to; bare QEMU has
    # none, and under TCG the firmware and kernel pay for probing it at every boot.
    _sub(devices, "controller", type="usb", model="none")
    for disk in spec.disks:
        _disk(devices, disk)
    _console(devices, spec.console_log, spec.console_stream)
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    _network(root, spec)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def run_id_of(xml: str) -> str | None:
    """The harness run that made a domain, or None if the harness did not make it."""
    made = owner_of(xml)
    return made[0] if made else None


def owner_of(xml: str) -> tuple[str, dict[str, str]] | None:
    """(run id, owner attributes) of a domain the harness made, else None."""
    el = ET.fromstring(xml).find(f"metadata/{{{HARNESS_NS}}}run")
    if el is None or not el.get("id"):
        return None
    return el.get("id"), {k: v for k, v in el.attrib.items() if k != "id"}

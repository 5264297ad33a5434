"""Libvirt domain XML, composed from small per-device pieces of data.

Networking is QEMU user mode with `restrict=on` (the guest reaches nothing
outside QEMU) and one forward from 127.0.0.1 to the guest's SSH port. libvirt's
own <interface type='user'> cannot say either, so the NIC is passed as QEMU
arguments with an explicit PCI slot that libvirt does not hand out.
"""

from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
HARNESS_NS = "urn:container-os-harness:domain"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
NIC_SLOT = "0x1e"

ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("harness", HARNESS_NS)


@dataclass(frozen=True)
class Disk:
    pool: str
    volume: str
    target: str  # vda, vdb, ...
    fmt: str = "qcow2"
    readonly: bool = False
    serial: str = ""


@dataclass(frozen=True)
class DirectBoot:
    """libvirt's direct kernel boot, bypassing firmware and boot loader: for
    distros booted from a kernel and command line, and for fault injection."""

    kernel: str  # paths on the hypervisor host (pool volumes)
    cmdline: str
    initrd: str = ""


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
    open_network: bool = False  # users may opt out of restrict=on; tests never do
    fw_cfg: tuple[tuple[str, Path], ...] = ()  # (name, file on the host): Ignition configs
    direct: DirectBoot | None = None


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
        _sub(os_el, "boot", dev="hd")


def _disk(devices: ET.Element, disk: Disk) -> None:
    el = _sub(devices, "disk", type="volume", device="disk")
    _sub(el, "driver", name="qemu", type=disk.fmt, discard="unmap")
    _sub(el, "source", pool=disk.pool, volume=disk.volume)
    _sub(el, "target", dev=disk.target, bus="virtio")
    if disk.readonly:
        _sub(el, "readonly")
    if disk.serial:
        _sub(el, "serial", disk.serial)


def disk_xml(disk: Disk) -> str:
    """One disk on its own, for hot-plugging."""
    holder = ET.Element("devices")
    _disk(holder, disk)
    return ET.tostring(holder[0], encoding="unicode")


def _console(devices: ET.Element, log: Path) -> None:
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(log), append="off")
    _sub(serial, "target", port="0")


def netdev_arg(port: int, open_network: bool = False) -> str:
    restrict = "off" if open_network else "on"
    return f"user,id=hn0,restrict={restrict},hostfwd=tcp:127.0.0.1:{port}-:22"


def _network(root: ET.Element, spec: DomainSpec) -> None:
    cmdline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    args = ["-netdev", netdev_arg(spec.ssh_port, spec.open_network),
            "-device", f"virtio-net-pci,netdev=hn0,bus=pci.0,addr={NIC_SLOT}"]
    for arg in args:
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", value=arg)


def _fw_cfg(root: ET.Element, spec: DomainSpec) -> None:
    """QEMU fw_cfg items (Ignition's config) through libvirt's <sysinfo type='fwcfg'>,
    not a -fw_cfg argument: libvirt (9.0 here) then hands the file to the QEMU user
    for the domain's lifetime, so the config, which holds the guest's private host
    key, stays mode 0600; with -fw_cfg QEMU must be able to read it as any user."""
    if spec.fw_cfg:
        sysinfo = _sub(root, "sysinfo", type="fwcfg")
        for name, path in spec.fw_cfg:
            _sub(sysinfo, "entry", name=name, file=str(path))


def domain_xml(spec: DomainSpec) -> str:
    root = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(root, "name", spec.name)
    meta = _sub(root, "metadata")
    mine = ET.SubElement(meta, f"{{{HARNESS_NS}}}run")
    mine.set("id", spec.run_id)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    _fw_cfg(root, spec)
    _os(root, spec)
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "clock", offset="utc")
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"),
                          ("on_crash", "destroy")):
        _sub(root, event, action)
    devices = _sub(root, "devices")
    for disk in spec.disks:
        _disk(devices, disk)
    _console(devices, spec.console_log)
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    _network(root, spec)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def run_id_of(xml: str) -> str | None:
    """The harness run that made a domain, or None if the harness did not make it."""
    el = ET.fromstring(xml).find(f"metadata/{{{HARNESS_NS}}}run")
    return el.get("id") if el is not None else None

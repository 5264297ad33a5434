"""The domain XML the harness generates: valid for libvirt, and safe by construction."""

import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from harness.vm import domain

needs_validator = pytest.mark.skipif(shutil.which("virt-xml-validate") is None,
                                     reason="virt-xml-validate is missing (Debian "
                                     "libvirt-clients)")


def _validate(tmp_path: Path, xml: str) -> None:
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    out = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _spec(**over) -> domain.DomainSpec:
    values = dict(
        name="harness-abc-refos", run_id="abc", memory_mib=1024, firmware="uefi",
        disks=(domain.Disk("harness", "run-abc-refos.qcow2", "vda"),
               domain.Disk("harness", "run-abc-refos-seed.iso", "vdb", fmt="raw",
                           readonly=True)),
        console_log=Path("/tmp/console.log"), ssh_port=40022,
        nvram=Path("/var/lib/libvirt/images/harness/run-abc-refos-VARS.fd"))
    values.update(over)
    return domain.DomainSpec(**values)


@needs_validator
@pytest.mark.parametrize("firmware", ["uefi", "bios"])
def test_domain_xml_passes_virt_xml_validate(tmp_path, firmware):
    _validate(tmp_path, domain.domain_xml(_spec(firmware=firmware)))


def test_guest_network_is_restricted_and_forward_binds_loopback_only():
    xml = domain.domain_xml(_spec())
    args = [a.get("value") for a in ET.fromstring(xml).iter(f"{{{domain.QEMU_NS}}}arg")]
    netdev = args[args.index("-netdev") + 1]
    assert "restrict=on" in netdev
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert "0.0.0.0" not in xml


def test_seed_disk_is_read_only_virtio():
    root = ET.fromstring(domain.domain_xml(_spec()))
    seed = [d for d in root.iter("disk") if d.find("source").get("volume").endswith("seed.iso")]
    assert seed[0].find("readonly") is not None
    assert seed[0].find("target").get("bus") == "virtio"


def test_run_id_is_read_back_from_metadata_and_absent_on_foreign_domains():
    assert domain.run_id_of(domain.domain_xml(_spec(run_id="r1"))) == "r1"
    assert domain.run_id_of("<domain type='qemu'><name>someone-else</name></domain>") is None


@needs_validator
def test_direct_kernel_boot_validates_and_replaces_the_boot_device(tmp_path):
    direct = domain.DirectBoot("/var/lib/libvirt/images/harness/k", "console=ttyS0 root=/dev/x")
    xml = domain.domain_xml(_spec(firmware="bios", direct=direct))
    _validate(tmp_path, xml)
    os_el = ET.fromstring(xml).find("os")
    assert os_el.find("boot") is None and os_el.find("cmdline").text == direct.cmdline


@needs_validator
def test_iso_image_boots_as_an_ide_cdrom_first(tmp_path):
    iso = domain.Disk("harness", "run-abc-rancheros.qcow2", "hdc", device="cdrom",
                      readonly=True)
    xml = domain.domain_xml(_spec(firmware="bios", disks=(iso,)))
    _validate(tmp_path, xml)
    root = ET.fromstring(xml)
    cdrom = root.find("devices/disk")
    assert cdrom.get("device") == "cdrom" and cdrom.find("target").get("bus") == "ide"
    assert cdrom.find("readonly") is not None
    assert root.find("os/boot").get("dev") == "cdrom"


@needs_validator
def test_fw_cfg_goes_through_sysinfo_so_libvirt_lends_the_file_to_qemu(tmp_path):
    """Not a -fw_cfg argument: libvirt chowns a <sysinfo type='fwcfg'> file to the QEMU
    user while the domain runs, so an Ignition config (with a private host key) can
    stay 0600; tests/driver/test_ignition.py boots it."""
    config = Path("/run/harness-not-made/config.ign")
    xml = domain.domain_xml(_spec(fw_cfg=(("opt/com.coreos/config", config),)))
    _validate(tmp_path, xml)
    root = ET.fromstring(xml)
    (entry,) = root.findall("sysinfo[@type='fwcfg']/entry")
    assert (entry.get("name"), entry.get("file")) == ("opt/com.coreos/config", str(config))
    args = [a.get("value") for a in root.iter(f"{{{domain.QEMU_NS}}}arg")]
    assert "-fw_cfg" not in args


@needs_validator
def test_remote_guest_console_is_a_pty_to_stream_not_a_file_on_its_host(tmp_path):
    xml = domain.domain_xml(_spec(console_stream=True))
    _validate(tmp_path, xml)
    serial = ET.fromstring(xml).find("devices/serial")
    assert serial.get("type") == "pty" and serial.find("source") is None
    local = ET.fromstring(domain.domain_xml(_spec())).find("devices/serial")
    assert local.get("type") == "file"


def test_qemu_gets_no_usb_controller_from_libvirt():
    """What libvirt itself makes of the XML (its QEMU arguments): no USB controller,
    which bare QEMU does not have either and which costs boot time under TCG."""
    argv = _qemu_argv(domain.domain_xml(_spec(firmware="bios", disks=())))
    assert "qemu-system" in argv
    assert "usb" not in argv.replace("usb=off", "")


def _qemu_argv(xml: str) -> str:
    libvirt = pytest.importorskip("libvirt")
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as e:
        pytest.skip(f"libvirt is not reachable: {e}")
    try:
        return conn.domainXMLToNative("qemu-argv", xml, 0)
    finally:
        conn.close()


@needs_validator
def test_tcg_guest_gets_its_translation_cache_size_as_qemu_tb_size(tmp_path):
    """libvirt's <tcg><tb-cache> is valid XML and reaches QEMU as -accel tcg,tb-size."""
    xml = domain.domain_xml(_spec(firmware="bios", disks=(), tb_cache_mib=256))
    _validate(tmp_path, xml)
    assert "tb-size=256" in _qemu_argv(xml)


def test_kvm_guest_and_unset_size_carry_no_tb_cache():
    """KVM has no translation cache; 0 leaves QEMU's default."""
    for spec in (_spec(accel="kvm", tb_cache_mib=256), _spec(tb_cache_mib=0)):
        assert ET.fromstring(domain.domain_xml(spec)).find("features/tcg") is None


PRIVATE = domain.PrivateNic("/run/container-os-harness/runs/abc/networks/c0",
                            "52:54:00:87:00:0b")


def _args(xml: str) -> list[str]:
    return [a.get("value") for a in ET.fromstring(xml).iter(f"{{{domain.QEMU_NS}}}arg")]


@needs_validator
def test_a_private_nic_is_a_second_vde_nic_beside_the_restricted_user_one(tmp_path):
    xml = domain.domain_xml(_spec(private_nic=PRIVATE))
    _validate(tmp_path, xml)
    args = _args(xml)
    netdevs = [args[i + 1] for i, a in enumerate(args) if a == "-netdev"]
    devices = [args[i + 1] for i, a in enumerate(args) if a == "-device"]
    assert netdevs == ["user,id=hn0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22",
                       f"vde,id=lan0,sock={PRIVATE.socket_dir}"]
    assert devices[1] == ("virtio-net-pci,netdev=lan0,mac=52:54:00:87:00:0b,bus=pci.0,"
                          "addr=0x1d")
    assert domain.NIC_SLOT not in devices[1]


def test_a_machine_without_a_private_nic_has_one_nic():
    assert _args(domain.domain_xml(_spec())).count("-netdev") == 1


@pytest.mark.parametrize("nic", [
    domain.PrivateNic("/run/a,b/networks/c0", "52:54:00:87:00:0b"),
    domain.PrivateNic("networks/c0", "52:54:00:87:00:0b"),
    domain.PrivateNic("/run/x", "52:54:00:87:00:0b,romfile=/etc/passwd"),
    domain.PrivateNic("/run/x", "52:54:00:87:00:0b", slot=domain.NIC_SLOT),
])
def test_a_private_nic_qemu_would_misread_is_refused(nic):
    with pytest.raises(domain.PrivateNicError, match="private NIC"):
        domain.domain_xml(_spec(private_nic=nic))

"""A save file's own domain XML is never what a restore runs (issue 31, item 8):
libvirt's ABI check lets a restore keep host devices, 9p file systems, extra disks
and QEMU arguments, so the XML comes from the harness's machine spec
(snapshot.restore_xml) and only the saved UUID is taken over. Real libvirt: a tiny
domain started paused, with hostile additions, saved by libvirt, restored; no OS
boots."""

from xml.etree import ElementTree as ET

import libvirt
import pytest
from hostile_helpers import paused_spec

from harness.vm import domain, runs, savecache, snapshot

PLANTED = "opt/planted,string=planted-by-another-hand"
HOSTILE_PARTS = """
<devices>
  <hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0' slot='31'
   function='0'/></source></hostdev>
  <filesystem type='mount' accessmode='passthrough'><source dir='/'/>
   <target dir='hostroot'/></filesystem>
  <disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdc'/></disk>
</devices>
"""


def _hostile(xml: str, with_devices: bool = False) -> str:
    """The harness's XML with a planted QEMU argument (and, for the pure check, host
    devices, a 9p export of / and a disk of /etc/shadow, and vda repointed)."""
    root = ET.fromstring(xml)
    cmdline = root.find(f"{{{domain.QEMU_NS}}}commandline")
    for value in ("-fw_cfg", f"name={PLANTED}"):
        ET.SubElement(cmdline, f"{{{domain.QEMU_NS}}}arg", value=value)
    if with_devices:
        devices = root.find("devices")
        for part in ET.fromstring(HOSTILE_PARTS):
            devices.append(part)
        vda = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(vda, "source", file="/etc/shadow")
        ET.SubElement(vda, "target", dev="vda")
    return ET.tostring(root, encoding="unicode")


def test_restore_xml_is_the_harness_domain_whatever_the_save_says(runtime, libvirt_conn):
    run = runs.Run.start(libvirt_conn)
    try:
        spec = paused_spec(run, "tpl")
        saved = ET.fromstring(_hostile(domain.domain_xml(spec), with_devices=True))
        ET.SubElement(saved, "uuid").text = "9d2947c3-0c81-4dec-a53c-8f8aab251c1f"
        xml = snapshot.restore_xml(spec, ET.tostring(saved, encoding="unicode"))
    finally:
        runs.sweep(libvirt_conn, finished=frozenset({run.id}))
    for planted in ("hostdev", "filesystem", "/etc/shadow", "vdc", PLANTED):
        assert planted not in xml
    mine = ET.fromstring(xml)
    assert mine.findtext("uuid") == "9d2947c3-0c81-4dec-a53c-8f8aab251c1f"
    mine.remove(mine.find("uuid"))
    assert ET.tostring(mine) == ET.tostring(ET.fromstring(domain.domain_xml(spec)))


@pytest.mark.parametrize("identity", ["name", "uuid"])
def test_a_save_of_another_identity_is_refused(runtime, libvirt_conn, identity):
    run = runs.Run.start(libvirt_conn)
    try:
        spec = paused_spec(run, "tpl")
        saved = ET.fromstring(domain.domain_xml(spec))
        ET.SubElement(saved, "uuid").text = "not-a-uuid" if identity == "uuid" else \
            "9d2947c3-0c81-4dec-a53c-8f8aab251c1f"
        if identity == "name":
            saved.find("name").text = "harness-other"
        with pytest.raises(savecache.SaveFormatError,
                           match="no valid UUID" if identity == "uuid" else "harness-other"):
            snapshot.restore_xml(spec, ET.tostring(saved, encoding="unicode"))
    finally:
        runs.sweep(libvirt_conn, finished=frozenset({run.id}))


def test_a_real_save_with_a_planted_qemu_argument_restores_without_it(runtime, libvirt_conn,
                                                                      tmp_path):
    run = runs.Run.start(libvirt_conn)
    dom = restored = None
    try:
        spec = paused_spec(run, "tpl")
        dom = libvirt_conn.createXML(_hostile(domain.domain_xml(spec)),
                                     libvirt.VIR_DOMAIN_START_PAUSED)
        save = run.dir / "planted.save"
        dom.save(str(save))
        dom = None
        in_file = libvirt_conn.saveImageGetXMLDesc(str(save), libvirt.VIR_DOMAIN_XML_SECURE)
        assert PLANTED in in_file  # the save file really carries the hostile XML
        libvirt_conn.restoreFlags(str(save), snapshot.restore_xml(spec, in_file),
                                  libvirt.VIR_DOMAIN_SAVE_PAUSED)
        restored = libvirt_conn.lookupByName(spec.name)
        assert PLANTED not in restored.XMLDesc(0)
        assert domain.run_id_of(restored.XMLDesc(0)) == run.id
    finally:
        for d in (dom, restored):
            if d is not None:
                runs.destroy_domain(d)
        runs.sweep(libvirt_conn, finished=frozenset({run.id}))

"""The warm cache's pure parts: what a save's key depends on, and the per-session
copy of a memory image under a name and UUID of its own (harness.vm.savecache)."""

import dataclasses
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import libvirt
import pytest

from harness import catalog
from harness.paths import REPO
from harness.vm import savecache
from harness.vm.machine import MachineSpec

XML = ("<domain type='qemu'><name>harness-aaaa1111-refos-t1</name>"
       "<uuid>11111111-2222-3333-4444-555555555555</uuid><memory>1</memory></domain>")


def _inputs(**spec) -> dict:
    image = SimpleNamespace(key=spec.pop("image", "img-1"))
    r = MachineSpec(catalog.get("refos"), image, **spec)
    return {"spec": r.key(), "boot": dataclasses.asdict(r.distro.boot), "code": "c1",
            "qemu": 7002000, "libvirt": 9000000, "machine": "pc-i440fx-7.2", "accel": "tcg",
            "tb_cache_mib": 256}


@pytest.mark.parametrize("change", [
    {"image": "img-2"}, {"extra_config": {"runcmd": ["true"]}}, {"seed_format": "config-2"},
])
def test_a_changed_machine_spec_makes_a_new_save_key(change):
    assert savecache.digest(_inputs(**change)) != savecache.digest(_inputs())


@pytest.mark.parametrize("field,value", [
    ("qemu", 8000000), ("libvirt", 10000000), ("machine", "pc-i440fx-8.0"), ("accel", "kvm"),
    ("code", "c2"), ("boot", {"memory_mib": 2048}), ("tb_cache_mib", 512),
])
def test_a_changed_host_or_harness_input_makes_a_new_save_key(field, value):
    assert savecache.digest({**_inputs(), field: value}) != savecache.digest(_inputs())


def test_the_same_inputs_give_the_same_key():
    assert savecache.digest(_inputs()) == savecache.digest(_inputs())


def _save_image(path: Path, xml: str, payload: bytes) -> None:
    region = xml.encode() + b"\0" * 4096  # libvirt pads the XML for later edits
    header = savecache.HEADER.pack(savecache.MAGIC, 2, len(region), 1, 0, 0, *[0] * 14)
    path.write_bytes(header + region + payload)


def test_session_copy_renames_the_domain_in_the_xml_only(tmp_path):
    # The memory stream may hold the same bytes: only the XML region may change.
    payload = b"guest memory <name>harness-aaaa1111-refos-t1</name> " * 100
    _save_image(tmp_path / "m.save", XML, payload)
    xml, name = savecache.session_copy(tmp_path / "m.save", tmp_path / "c.save", XML,
                                       "harness-bbbb2222-refos-t1")
    data = (tmp_path / "c.save").read_bytes()
    assert name == "harness-bbbb2222-refos-t1" and f"<name>{name}</name>" in xml
    assert "11111111-2222" not in xml and data.endswith(payload)
    assert len(data) == (tmp_path / "m.save").stat().st_size
    assert xml.encode() in data and (tmp_path / "c.save").stat().st_mode & 0o077 == 0


def test_session_copy_refuses_what_is_not_a_libvirt_save(tmp_path):
    (tmp_path / "m.save").write_bytes(b"NotLibvirtSave!!" + bytes(struct.calcsize("=19I")) +
                                      XML.encode())
    with pytest.raises(savecache.SaveFormatError, match="not a libvirt save image"):
        savecache.session_copy(tmp_path / "m.save", tmp_path / "c.save", XML,
                               "harness-bbbb2222-refos-t1")


def test_session_copy_refuses_a_name_of_another_length(tmp_path):
    _save_image(tmp_path / "m.save", XML, b"")
    with pytest.raises(savecache.SaveFormatError, match="not as long"):
        savecache.session_copy(tmp_path / "m.save", tmp_path / "c.save", XML, "harness-x")


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The harness and its seeds, copied: the test edits the copy, never the real files."""
    for top in ("harness", "seeds"):
        shutil.copytree(REPO / top, tmp_path / top,
                        ignore=shutil.ignore_patterns("__pycache__"))
    assert savecache.guest_digest(tmp_path) == savecache.guest_digest(REPO)
    return tmp_path


@pytest.mark.parametrize("path", ["seeds/cloud-config.json", "seeds/harness-runcmd.service",
                                  "harness/vm/machine.py", "harness/vm/domain.py",
                                  "harness/seed/cloudconfig.py"])
def test_a_changed_seed_document_or_guest_code_makes_a_new_save_key(repo_copy, path):
    before = savecache.guest_digest(repo_copy)
    with open(repo_copy / path, "a") as f:
        f.write("\n")
    assert savecache.guest_digest(repo_copy) != before


def test_a_changed_seed_document_changes_the_key_a_session_looks_saves_up_by(repo_copy):
    """cache_key as a session calls it, on libvirt's own test driver (no VM)."""
    conn = libvirt.open("test:///default")
    try:
        spec = MachineSpec(catalog.get("refos"), SimpleNamespace(key="img-1"))
        before = savecache.cache_key(conn, spec, "tcg", repo_copy)
        assert savecache.cache_key(conn, spec, "tcg", repo_copy) == before
        path = repo_copy / "seeds/cloud-config.json"
        path.write_text(path.read_text().replace('"ssh_pwauth": false', '"ssh_pwauth": true'))
        assert savecache.cache_key(conn, spec, "tcg", repo_copy) != before
    finally:
        conn.close()


def test_a_new_module_beside_the_guest_code_makes_a_new_save_key(repo_copy):
    before = savecache.guest_digest(repo_copy)
    (repo_copy / "harness/vm/newpart.py").write_text('"""a part nobody listed"""\n')
    assert savecache.guest_digest(repo_copy) != before


def test_code_that_never_touches_a_guest_keeps_the_save_key(repo_copy):
    before = savecache.guest_digest(repo_copy)
    (repo_copy / "harness/report/__init__.py").write_text("# a report change\n")
    (repo_copy / "harness/vm/__pycache__").mkdir()
    (repo_copy / "harness/vm/__pycache__/machine.cpython-311.pyc").write_bytes(b"\0")
    assert savecache.guest_digest(repo_copy) == before

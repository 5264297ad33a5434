"""The catalog: every shipped entry loads, and a bad entry names file, entry and field."""

from pathlib import Path

import pytest

from harness import catalog

HISTORIC = {"coreos-647", "atomic-f22", "snappy-1504", "rancheros-03", "photon-tp"}
SUCCESSORS = {"flatcar", "fedora-coreos", "ubuntu-core-24", "rancheros", "burmillaos",
              "photon-5"}

GOOD = """
[demo]
title = "demo"
family = "demo"
unverified = ["boot: never booted"]
[demo.image]
format = "qcow2"
urls = ["http://127.0.0.1:1/demo.qcow2"]
digest = "sha256:{hex}"
[demo.boot]
firmware = "bios"
memory_mib = 1024
ssh_user = "core"
seed = "ignition"
[demo.promises]
docker = "socket"
init = "systemd"
update = "none"
""".replace("{hex}", "a" * 64)


def load_text(tmp_path: Path, text: str) -> dict[str, catalog.Distro]:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return catalog.load(p)


def test_every_shipped_entry_is_valid_and_every_distro_is_there():
    entries = catalog.load()
    assert HISTORIC | SUCCESSORS | {"refos"} <= set(entries)


@pytest.mark.parametrize("name", sorted(HISTORIC | SUCCESSORS))
def test_downloaded_entries_say_where_facts_came_from_and_how_to_override(name):
    d = catalog.load()[name]
    assert d.sources, "every entry cites its sources"
    assert d.image.env == "HARNESS_IMAGE_" + name.upper().replace("-", "_")


def test_a_good_entry_loads(tmp_path):
    assert load_text(tmp_path, GOOD)["demo"].image.digest == "sha256:" + "a" * 64


@pytest.mark.parametrize(("old", "new", "field"), [
    ("memory_mib = 1024", 'memory_mib = "lots"', "boot.memory_mib"),
    ('ssh_user = "core"', 'ssh_user = "core"\nuser = "core"', "boot.user"),
    ('firmware = "bios"', 'firmware = "coreboot"', "boot.firmware"),
    ('seed = "ignition"', 'seed = "cloud-config"', "boot.seed"),
    ('format = "qcow2"', 'format = "qcow2"\ncompression = "lz4"', "image.compression"),
    (f'digest = "sha256:{"a" * 64}"', 'digest = "sha256:abc"', "image.digest"),
    ('urls = ["http://127.0.0.1:1/demo.qcow2"]', "urls = []", "image.urls"),
    ('urls = ["http://127.0.0.1:1/demo.qcow2"]', 'urls = ["http://127.0.0.1:1/{version}"]',
     "image.urls"),
    ('format = "qcow2"', 'format = "ova"', "image.member"),
    ('docker = "socket"', 'docker = "always"', "promises.docker"),
    ('init = "systemd"', "", "promises.init"),
    ('unverified = ["boot: never booted"]', "unverified = 3", "unverified"),
    # Checked against the harness's registries when the catalog loads, not at boot:
    ('seed = "ignition"', 'seed = "ignition"\nseed_options = {fw_cfg = "opt/x"}', "boot.seed"),
    ('update = "none"', 'update = "zypper"', "promises.update"),
    ('format = "qcow2"', 'format = "qcow2"\nbuild = "nosuch_disk"', "image.build"),
    ('format = "qcow2"', 'format = "qcow2"\nenv = "PATH"', "image.env"),
])
def test_a_bad_entry_names_file_entry_and_field(tmp_path, old, new, field):
    assert old in GOOD
    with pytest.raises(catalog.CatalogError) as e:
        load_text(tmp_path, GOOD.replace(old, new, 1))
    message = str(e.value)
    assert str(tmp_path / "bad.toml") in message
    assert "entry 'demo'" in message
    assert f"field '{field}'" in message


def test_a_download_with_nothing_to_check_it_against_must_say_so(tmp_path):
    text = GOOD.replace(f'digest = "sha256:{"a" * 64}"', "")
    with pytest.raises(catalog.CatalogError, match=r"field 'image\.digest'"):
        load_text(tmp_path, text)
    admitted = text.replace('["boot: never booted"]', '["image.digest: host gone"]')
    assert load_text(tmp_path, admitted)["demo"].image.digest == ""


def test_an_entry_that_extends_another_is_it_with_its_own_fields_over_it(tmp_path):
    text = GOOD + """
[variant]
extends = "demo"
title = "variant"
[variant.boot]
memory_mib = 2048
"""
    demo, variant = (load_text(tmp_path, text)[n] for n in ("demo", "variant"))
    assert variant.title == "variant" and variant.boot.memory_mib == 2048
    assert variant.boot.ssh_user == demo.boot.ssh_user and variant.image == demo.image
    assert variant.promises == demo.promises


@pytest.mark.parametrize(("extends", "why"), [("nosuch", "not an entry"),
                                              ("variant", "part of a loop")])
def test_extends_must_name_another_entry_without_a_loop(tmp_path, extends, why):
    text = GOOD + f'\n[variant]\nextends = "{extends}"\n'
    with pytest.raises(catalog.CatalogError, match=f"entry 'variant'.*{why}"):
        load_text(tmp_path, text)


@pytest.mark.parametrize("name", ["../../evil", "", "UPPER", "a/b"])
def test_a_distro_name_that_is_no_plain_name_is_refused(tmp_path, name):
    with pytest.raises(catalog.CatalogError, match="distro name"):
        load_text(tmp_path, GOOD.replace("[demo", f'["{name}"'))


def test_an_empty_or_undecodable_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(catalog.CatalogError, match="no entries"):
        load_text(tmp_path, "")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(GOOD.replace('"demo"', '"d\xe9mo"').encode("latin-1"))
    with pytest.raises(catalog.CatalogError, match="not valid UTF-8 TOML"):
        catalog.load(bad)


def test_refos_noapparmor_is_refos_with_another_disk():
    entries = catalog.load()
    refos, variant = entries["refos"], entries["refos-noapparmor"]
    assert variant.image.build == "noapparmor_disk"
    assert (variant.boot, variant.promises) == (refos.boot, refos.promises)

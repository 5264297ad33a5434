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
    assert d.boot.seed in catalog.SEEDS
    verifiable = d.image.digest or d.image.checksum_url or d.image.stream == "fedora-coreos"
    assert verifiable or any(u.startswith("image.digest:") for u in d.unverified)


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

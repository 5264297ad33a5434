"""The catalog: every shipped entry loads, and a bad entry names file, entry and field."""

from pathlib import Path

import pytest

from harness import catalog
from harness.vm import timeouts

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
    ("memory_mib = 1024", "memory_mib = 1024\ntimeouts = { ready = \"long\" }",
     "boot.timeouts"),
    ("memory_mib = 1024", "memory_mib = 1024\ntimeouts = { ready = true }", "boot.timeouts"),
    ("memory_mib = 1024", "memory_mib = 1024\ntimeouts = { redy = 120 }",
     "boot.timeouts.redy"),
    ("memory_mib = 1024", "memory_mib = 1024\ntimeouts = { ready = 0 }",
     "boot.timeouts.ready"),
])
def test_a_bad_entry_names_file_entry_and_field(tmp_path, old, new, field):
    assert old in GOOD
    with pytest.raises(catalog.CatalogError) as e:
        load_text(tmp_path, GOOD.replace(old, new, 1))
    message = str(e.value)
    assert str(tmp_path / "bad.toml") in message
    assert "entry 'demo'" in message
    assert f"field '{field}'" in message


def test_a_distro_budget_replaces_the_harness_one_and_is_scaled_like_it(tmp_path):
    """refos-snap's first boot seeds snapd: its catalog entry gives it a longer "ready"
    wait, which TCG scales as it scales the harness's own; others keep the default."""
    timeouts.set_accel("tcg")
    slow = load_text(tmp_path, GOOD.replace("memory_mib = 1024",
                                            "memory_mib = 1024\ntimeouts = { ready = 120 }"))
    plain = load_text(tmp_path, GOOD)
    assert timeouts.get("ready", slow["demo"].boot.timeouts) == 120 * timeouts.TCG_FACTOR
    assert timeouts.get("ready", plain["demo"].boot.timeouts) == timeouts.get("ready")
    assert timeouts.get("boot", slow["demo"].boot.timeouts) == timeouts.get("boot")
    assert catalog.get("refos-snap").boot.timeouts["ready"] > timeouts.BASE["ready"]


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


@pytest.mark.parametrize("source", [
    "/home/someone/FACTS.md (distro table)",
    "~/notes/flatcar.txt",
    "file:///srv/mirror/coreos/647.0.0/",
    "the v1.5.8 release assets on github.com/rancher/os",
    "rancher/os cmd/control/os.go (no commit or tag)",
])
def test_a_source_that_is_a_local_path_or_names_no_upstream_is_refused(tmp_path, source):
    text = GOOD.replace('family = "demo"', f'family = "demo"\nsources = [{source!r}]')
    with pytest.raises(catalog.CatalogError, match=r"field 'sources'.*upstream source"):
        load_text(tmp_path, text)


@pytest.mark.parametrize("source", [
    "https://github.com/rancher/os/issues/2139 (a real listing)",
    "rancher/os cmd/control/os.go @ v1.5.8 (osMetaDataGet)",
    "coreos/scripts common.sh @ a6824e7b",
    "rancher/os commit d513c3be (the fix on the 1.4 line)",
])
def test_an_upstream_source_is_accepted(tmp_path, source):
    text = GOOD.replace('family = "demo"', f'family = "demo"\nsources = ["{source}"]')
    assert load_text(tmp_path, text)["demo"].sources == (source,)


def test_every_shipped_source_is_upstream_or_a_file_of_this_repository():
    for d in catalog.load().values():
        assert d.sources and not any(s.startswith("/") for s in d.sources), d.name


# Facts checked against upstream for issue 18; each names where it was read.
def test_rancheros_158_is_checked_against_checksums_txt():
    # rancher/os scripts/checksums @ v1.5.8; iso-checksums.txt went in 7f4f2701.
    img = catalog.get("rancheros").image
    assert img.checksum_url.endswith("/v1.5.8/checksums.txt") and img.checksum_algorithm == "sha256"


def test_burmillaos_asset_user_and_missing_checksum_file():
    # burmilla/os scripts/release-amd64, images/02-console/Dockerfile @ v2.0.1.
    d = catalog.get("burmillaos")
    assert d.image.urls == ("https://github.com/burmilla/os/releases/download/v2.0.1/"
                            "burmillaos-v2.0.1.iso",)
    assert not d.image.checksum_url and d.boot.ssh_user == "rancher"
    assert any(u.startswith("image.digest: the release publishes no checksum")
               for u in d.unverified)


def test_photon_tp1_url_and_its_sha1sum_file():
    # vmware/photon#18.
    img = catalog.get("photon-tp").image
    assert img.urls[0].endswith("/vmware/photon/iso/1.0TP1/x86_64/photon-1.0TP1.iso")
    assert img.checksum_url == img.urls[0] + ".sha1sum" and img.checksum_algorithm == "sha1"


def test_rancheros_03_does_not_claim_ros_came_later():
    d = catalog.get("rancheros-03")
    assert not any("rancherctl os upgrade" in u for u in d.unverified)
    assert any("5b9ef6ae" in s for s in d.sources)
    assert any(u.startswith("image.digest:") and "iso-checksums.txt" in u for u in d.unverified)


def test_confirmed_image_facts_are_no_longer_unverified():
    assert not any(u.startswith(("image.format", "image.checksum_algorithm"))
                   for u in catalog.get("coreos-647").unverified)
    assert not any(u.startswith("image.checksum_url") for u in catalog.get("flatcar").unverified)


def test_ubuntu_core_first_boot_reads_cidata_on_signed_grade_models():
    note = catalog.get("ubuntu-core-24").promises.notes["seed"]
    assert "CIDATA" in note and "overlord/install/install.go" in note


def test_photon_5_firmware_claim_is_marked_unverified():
    assert any(u.startswith("boot.firmware:") and "could not be checked" in u
               for u in catalog.get("photon-5").unverified)


def test_rancheros_14_memory_is_not_the_marginal_1280_and_says_why():
    d = catalog.get("rancheros-14")
    assert d.boot.memory_mib == 2048
    assert any(u.startswith("boot.memory_mib:") and "#2396" in u for u in d.unverified)
    assert catalog.get("rancheros-141").image.urls[0].endswith("/v1.4.1/rancheros.iso")

"""Settings and catalog entries that are valid as types but not as values (issue 31,
lows): a huge timeout, a typo in HARNESS_IMAGE_<DISTRO>, a relative HARNESS_CACHE,
an `extends` that is a list, a chain of extends too deep. Each is one clear error
naming the input, never a traceback from deep inside."""

import pytest

from harness import catalog, images, settings
from harness.vm import timeouts

BOUNDED = ["HARNESS_TIMEOUT_SCALE", "HARNESS_FETCH_ATTEMPTS", "HARNESS_FETCH_BACKOFF",
           "HARNESS_FETCH_MAX_BACKOFF", "HARNESS_FETCH_CONNECT_TIMEOUT",
           "HARNESS_FETCH_READ_TIMEOUT", "HARNESS_IMAGE_MAX_MIB", "HARNESS_SAVE_CACHE_MAX_MIB"]


@pytest.mark.parametrize("name", BOUNDED)
def test_a_huge_number_is_refused_when_read(monkeypatch, name):
    huge = "1e308" if "MIB" not in name and "ATTEMPTS" not in name else "10" + "0" * 30
    monkeypatch.setenv(name, huge)
    with pytest.raises(settings.SettingError, match=f"{name}=.*must be at most"):
        settings.check()


def test_a_huge_timeout_scale_never_reaches_a_sleep(monkeypatch):
    monkeypatch.setenv("HARNESS_TIMEOUT_SCALE", "1e308")
    with pytest.raises(settings.SettingError, match="HARNESS_TIMEOUT_SCALE"):
        timeouts.get("boot")


def test_a_sane_large_value_still_passes(monkeypatch):
    monkeypatch.setenv("HARNESS_TIMEOUT_SCALE", "20")
    monkeypatch.setenv("HARNESS_FETCH_MAX_BACKOFF", "600")
    settings.check()


def test_a_typo_in_an_image_variable_names_the_distro_and_the_known_ones(monkeypatch):
    monkeypatch.setenv("HARNESS_IMAGE_REFSO", "/srv/refos.qcow2")
    with pytest.raises(settings.SettingError, match=r"'REFSO'.*known: .*HARNESS_IMAGE_REFOS"):
        images.check_settings()


def test_an_image_variable_of_a_catalog_distro_passes(monkeypatch):
    monkeypatch.setenv("HARNESS_IMAGE_REFOS", "/srv/refos.qcow2")
    images.check_settings()


def test_a_relative_cache_is_refused(monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", "cache")
    with pytest.raises(settings.SettingError, match=r"HARNESS_CACHE='cache'.*absolute path"):
        settings.get("HARNESS_CACHE")


ENTRY = """
[{name}]
title = "{name}"
family = "test"
unverified = ["boot: never booted"]
{extends}
[{name}.image]
format = "qcow2"
urls = ["https://example.invalid/{name}.qcow2"]
digest = "sha256:{hex}"
[{name}.boot]
firmware = "bios"
memory_mib = 512
ssh_user = "root"
seed = "none"
[{name}.promises]
docker = "manual"
init = "systemd"
update = "none"
"""


def _load(tmp_path, text: str) -> dict:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return catalog.load(path)


def test_extends_given_as_a_list_names_the_entry(tmp_path):
    text = ENTRY.format(name="b", extends="", hex="a" * 64) + \
        '[a]\nextends = ["b"]\n'
    with pytest.raises(catalog.CatalogError, match=r"entry 'a': field 'extends' is \['b'\]"):
        _load(tmp_path, text)


def test_a_very_deep_extends_chain_names_the_entry(tmp_path):
    text = ENTRY.format(name="e0", extends="", hex="a" * 64)
    text += "".join(f'[e{i}]\nextends = "e{i - 1}"\n' for i in range(1, 2000))
    with pytest.raises(catalog.CatalogError, match=r"entry 'e[0-9]+': field 'extends' starts a "
                                                    r"chain deeper than"):
        _load(tmp_path, text)


def test_a_short_extends_chain_still_loads(tmp_path):
    text = ENTRY.format(name="e0", extends="", hex="a" * 64)
    text += "".join(f'[e{i}]\nextends = "e{i - 1}"\n' for i in range(1, 5))
    assert _load(tmp_path, text)["e4"].boot.memory_mib == 512

"""`harness list`, run as a user runs it (a process of its own), against the catalog:
every distro with its facts and promises, as a table and as JSON, and whether the
cache has its image, without downloading or building anything."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import catalog
from harness.images import build, fetch
from harness.paths import REPO

CATALOG = catalog.load()
# The promises harness.plugin.promises knows (the markers tests use).
PROMISES = {"readonly", "writable", "docker_shipped", "docker_at_boot", "update",
            "auto_fallback", "etcd", "fleet"}


def harness(cache: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` with a cache of the test's own and no image variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_IMAGE_")}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120,
                          env={**clean, "HARNESS_CACHE": str(cache), **env})


def listed(cache: Path, *args: str, **env: str) -> list[dict]:
    out = harness(cache, "list", "--json", *args, **env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1  # one line: the nightly workflow's job matrix
    return json.loads(out.stdout)


def test_json_lists_every_catalog_distro_with_its_facts(tmp_path):
    got = listed(tmp_path / "cache")
    assert [e["distro"] for e in got] == list(CATALOG)
    for e in got:
        d = CATALOG[e["distro"]]
        assert (e["title"], e["family"], e["update"], e["firmware"], e["memory_mib"],
                e["seed"]) == (d.title, d.family, d.promises.update, d.boot.firmware,
                               d.boot.memory_mib, d.boot.seed)
        assert e["image"] == ("build" if d.builtin else "download")
        assert e["cached"] is False  # an empty cache
        assert set(e["promises"]) | set(e["not_promised"]) == PROMISES
        assert not set(e["promises"]) & set(e["not_promised"])


def test_json_says_which_promises_a_distro_makes_and_why_not_the_others(tmp_path):
    got = {e["distro"]: e for e in listed(tmp_path / "cache")}
    assert "auto_fallback" in got["refos"]["promises"]
    ostree = CATALOG["refos-ostree"].promises
    assert not ostree.auto_fallback
    assert got["refos-ostree"]["not_promised"]["auto_fallback"] == ostree.notes["fallback"]
    for name, e in got.items():
        assert ("readonly" in e["promises"]) == bool(CATALOG[name].promises.readonly)


def test_table_has_a_line_per_distro_with_its_columns(tmp_path):
    out = harness(tmp_path / "cache", "list")
    assert out.returncode == 0, out.stderr
    head, *rows = out.stdout.splitlines()
    assert head.split() == ["DISTRO", "FAMILY", "UPDATE", "FIRMWARE", "IMAGE", "PROMISES"]
    assert [r.split()[0] for r in rows] == list(CATALOG)
    for row in rows:
        d = CATALOG[row.split()[0]]
        assert row.split()[1:4] == [d.family, d.promises.update, d.boot.firmware]
        assert ("built here" if d.builtin else "download") in row


def test_named_distros_only_and_an_unknown_name_is_refused(tmp_path):
    assert [e["distro"] for e in listed(tmp_path / "c", "refos-snap,flatcar", "refos")] == \
        ["refos-snap", "flatcar", "refos"]
    out = harness(tmp_path / "c", "list", "nope")
    assert out.returncode == 2 and "unknown distro 'nope'" in out.stderr


def test_cached_images_are_listed_as_cached(cache):
    """The cache's layout is written by hand here (a build takes 20 minutes and the
    pinned downloads are gigabytes); `harness list` must find it as a run would."""
    built = build.artifacts()  # where a build of this recipe goes (the `cache` fixture's)
    pinned = CATALOG["atomic-f22"].image
    folder = fetch.url_dir(pinned.urls[1])
    built.root.mkdir(parents=True)
    (built.root / "build.json").write_text("{}")
    built.disk.write_bytes(b"disk")
    folder.mkdir(parents=True)
    (folder / "data").write_bytes(b"image")
    (folder / "digest").write_text(pinned.digest + "\n")
    got = {e["distro"]: e["cached"] for e in listed(cache)}
    assert got["refos"] and got["atomic-f22"]
    assert not got["refos-ostree"]  # its disk is not in that build
    assert not got["coreos-647"]
    (folder / "digest").write_text("sha256:" + "0" * 64)  # not the pinned one
    assert not {e["distro"]: e["cached"] for e in listed(cache)}["atomic-f22"]
    table = harness(cache, "list", "refos", "refos-ostree").stdout.splitlines()
    assert "built here, cached" in table[1] and "cached" not in table[2]


@pytest.mark.parametrize("exists", [True, False])
def test_a_local_image_variable_is_the_image_source(exists, tmp_path):
    image = tmp_path / "atomic.qcow2"
    if exists:
        image.write_bytes(b"x")
    (e,) = listed(tmp_path / "cache", "atomic-f22", HARNESS_IMAGE_ATOMIC_F22=str(image))
    assert (e["image"], e["cached"]) == ("local", exists)

"""Hostile downloads and careless image paths (issue 14: #5, #6, #8, #9 and the low
items about fetching). One test per attack, named for what it stops.

Every server is the real local one on 127.0.0.1 (tools/localserver.py); images
are made with the real qemu-img, signatures with a GPG key made for the tests
and checked with the real gpgv.
"""

import json
import logging
import lzma
import os
import subprocess
import time
from pathlib import Path

import pytest

from harness import catalog, cli, images
from harness.images import convert, fetch
from tests.helpers import Signer, bootable, sha256

# The fixtures of tests/unit: a real 127.0.0.1 server, a throwaway cache, short retries,
# a GPG key made for the tests, and one-entry catalogs.

SECRET = b"HOST-SECRET-" * 100


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def host_secret(tmp_path: Path) -> Path:
    """A host file an image must never pull in: raw bytes of a 1 MiB 'disk'."""
    p = tmp_path / "host-secret.raw"
    p.write_bytes(SECRET + bytes(2**20 - len(SECRET)))
    return p


def served(server, tiny, data: bytes, fmt: str, extra: str = "", name: str = "tiny.img"):
    url = server.add(f"/{name}", data)
    return tiny(f'format = "{fmt}"\nurls = ["{url}"]\ndigest = "{sha256(data)}"\n{extra}')


def unavailable(distro, **kw) -> images.ImageUnavailable:
    with pytest.raises(images.ImageUnavailable) as e:
        images.resolve(distro, **kw)
    return e.value


# -- #5: images that refer to host files -------------------------------------------------

def test_downloaded_qcow2_with_a_host_backing_file_is_refused(server, tiny, cache, tmp_path):
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(host_secret(tmp_path)), "-F", "raw",
             str(evil), "1M")
    e = unavailable(served(server, tiny, evil.read_bytes(), "qcow2"))
    assert e.what == "unsafe image" and "host-secret.raw" in str(e)


def vmdk_with_host_parent(tmp_path: Path) -> Path:
    """A vmdk whose parentFileNameHint names a vmdk holding the host's secret."""
    parent = tmp_path / "parent.vmdk"
    qemu_img("convert", "-q", "-O", "vmdk", str(host_secret(tmp_path)), str(parent))
    evil = tmp_path / "evil.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-b", str(parent), "-F", "vmdk", str(evil), "1M")
    return evil


def test_downloaded_vmdk_whose_parent_names_a_host_file_is_refused(server, tiny, cache,
                                                                   tmp_path):
    evil = vmdk_with_host_parent(tmp_path)
    e = unavailable(served(server, tiny, evil.read_bytes(), "vmdk"))
    assert e.what == "unsafe image" and "parent.vmdk" in str(e)
    assert not list(cache.rglob("disk.qcow2"))


def test_conversion_opens_no_backing_file_even_if_one_slipped_past_the_check(tmp_path):
    out = tmp_path / "out.qcow2"
    convert.qemu_img_convert(vmdk_with_host_parent(tmp_path), "vmdk", out)
    raw = tmp_path / "out.raw"
    qemu_img("convert", "-q", "-O", "raw", str(out), str(raw))
    assert SECRET[:12] not in raw.read_bytes()


# -- #6: integrity over plain HTTP, and vendor signatures --------------------------------

def sums_entry(server, tiny, data: bytes, sums: str, extra: str = ""):
    """An entry whose digest comes from a checksum file on the (plain HTTP) server."""
    url = server.add("/rel/tiny.img", data)
    sums_url = server.add("/rel/tiny.img.DIGESTS", sums.encode())
    return tiny(f'format = "raw"\nurls = ["{url}"]\nchecksum_url = "{sums_url}"\n'
                f'checksum_algorithm = "sha256"\n{extra}')


def digests(data: bytes) -> str:
    return f"# SHA256 HASH\n{sha256(data).split(':')[1]}  tiny.img\n"


def test_unsigned_checksum_file_over_plain_http_is_refused(server, tiny, cache):
    data = bootable()
    e = unavailable(sums_entry(server, tiny, data, digests(data)))
    assert e.what == "plain HTTP" and "HARNESS_ALLOW_INSECURE_HTTP=1" in str(e)
    assert fetch.cached(server.url("/rel/tiny.img"), cache) is None
    assert [r.status for r in server.requests_for("/rel/tiny.img")] == []


def test_plain_http_digest_is_accepted_only_with_the_opt_in_and_the_log_says_so(
        server, tiny, cache, monkeypatch, caplog):
    data = bootable()
    monkeypatch.setenv("HARNESS_ALLOW_INSECURE_HTTP", "1")
    with caplog.at_level(logging.WARNING, "harness"):
        images.resolve(sums_entry(server, tiny, data, digests(data)))
    assert "INSECURE" in caplog.text and "/rel/tiny.img.DIGESTS" in caplog.text


def signed_entry(server, tiny, signer, data: bytes, asc: str):
    """As Flatcar: DIGESTS and its clearsigned DIGESTS.asc, both over plain HTTP."""
    sig_url = server.add("/rel/tiny.img.DIGESTS.asc", asc.encode())
    return sums_entry(server, tiny, data, digests(data),
                      f'signature_url = "{sig_url}"\nsignature_key = "{signer.key}"')


def test_clearsigned_digests_verified_with_the_vendor_key_make_plain_http_safe(
        server, tiny, cache, signer):
    data = bootable()
    distro = signed_entry(server, tiny, signer, data, signer.clearsign(digests(data)))
    assert images.resolve(distro).digest == sha256(data)


def test_clearsigned_digests_with_a_bad_signature_are_refused(server, tiny, cache, signer):
    real, evil = bootable(seed=1), bootable(seed=2)
    asc = signer.clearsign(digests(real)).replace(sha256(real).split(":")[1],
                                                  sha256(evil).split(":")[1])
    e = unavailable(signed_entry(server, tiny, signer, evil, asc))
    assert e.what == "signature" and "BAD signature" in str(e)
    assert [r.status for r in server.requests_for("/rel/tiny.img")] == []


def test_a_swapped_image_with_matching_digests_fails_its_detached_signature(
        server, tiny, cache, signer):
    real, evil = bootable(seed=1), bootable(seed=2)
    sig_url = server.add("/rel/tiny.img.sig", signer.detached(real))  # as CoreOS's .sig
    extra = f'signature_url = "{sig_url}"\nsignature_key = "{signer.key}"'
    e = unavailable(sums_entry(server, tiny, evil, digests(evil), extra))
    assert e.what == "signature" and "nothing was cached" in str(e)
    assert fetch.cached(server.url("/rel/tiny.img"), cache) is None


def test_a_signature_made_before_the_vendor_key_expired_still_verifies(tmp_path):
    from harness.images import signature  # new with the check; the module loads without

    old = Signer(tmp_path / "home")  # as CoreOS's 2015 key: expired since
    old.home.mkdir(mode=0o700)
    try:
        old.gpg("--quick-gen-key", "Expired <old@test.invalid>", "ed25519", "sign",
                "seconds=1")
        old.key.write_bytes(old.gpg("--armor", "--export"))
        image = tmp_path / "old.img"
        image.write_bytes(bootable())
        sig = old.detached(image.read_bytes())
        time.sleep(2)
        signature.verify_detached(sig, image, old.key)
        image.write_bytes(bootable(seed=2))
        with pytest.raises(signature.BadSignature):
            signature.verify_detached(sig, image, old.key)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(old.home), "--kill", "gpg-agent"],
                       capture_output=True, check=False)


def test_the_catalog_ships_the_vendor_keys_it_names():
    for distro in catalog.load().values():
        if distro.image.signature_url:
            key = catalog.key_path(distro.image)
            assert key.is_file() and key.is_relative_to(catalog.REPO / "images" / "keys")


# -- #8: --image problems are usage errors ----------------------------------------------

def local_entry(tiny):
    return tiny('format = "raw"\nurls = ["http://127.0.0.1:9/never.img"]\n'
                f'digest = "{sha256(b"x")}"')


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_image_path_that_is_missing_or_a_folder_is_a_usage_error(kind, tiny, cache, tmp_path):
    path = tmp_path / ("nonexistent.img" if kind == "missing" else "")
    with pytest.raises(images.ImageUsageError) as e:
        images.resolve(local_entry(tiny), image_path=path)
    assert str(path) in str(e.value)
    assert ("no such file" if kind == "missing" else "is a folder") in str(e.value)


def test_missing_file_named_by_the_image_variable_is_a_usage_error(tiny, cache, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("HARNESS_IMAGE_TINY", str(tmp_path / "gone.img"))
    with pytest.raises(images.ImageUsageError, match=r"HARNESS_IMAGE_TINY .*gone\.img: no such"):
        images.resolve(local_entry(tiny))


def test_text_file_given_as_image_is_refused_not_converted(tiny, cache, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not a disk\n" * 100)
    distro = tiny('format = "raw"\nurls = ["http://127.0.0.1:9/x.img"]\n'
                  'checksum_url = "http://127.0.0.1:9/SUMS"\nchecksum_algorithm = "sha256"')
    with pytest.raises(images.ImageUsageError, match=r"notes\.txt: not a disk image"):
        images.resolve(distro, image_path=text)
    assert not list(cache.rglob("disk.qcow2"))


def test_image_given_for_refos_is_a_usage_error_not_ignored(tmp_path):
    local = tmp_path / "mine.qcow2"
    local.write_bytes(b"QFI\xfb")
    with pytest.raises(images.ImageUsageError, match=r"mine\.qcow2: refos is built here"):
        images.resolve(catalog.get("refos"), image_path=local)


# -- #9: a cache hit is hashed again when the file changed ------------------------------

def fetched_once(server, cache, policy) -> tuple[fetch.Source, Path, bytes]:
    data = bootable()
    source = fetch.Source((server.add("/c.img", data),), sha256(data))
    return source, fetch.fetch(source, policy=policy, cache=cache).path, data


def test_bytes_overwritten_in_the_cache_are_hashed_again_and_refused(server, cache, policy,
                                                                     caplog):
    source, path, data = fetched_once(server, cache, policy)
    path.write_bytes(bytes(b ^ 0xFF for b in data))  # same size, other bytes, new mtime
    with pytest.raises(fetch.NotCached):
        fetch.fetch(source, offline=True, cache=cache)
    assert "changed since it was verified" in caplog.text
    assert fetch.fetch(source, policy=policy, cache=cache).path.read_bytes() == data


def test_fetch_verify_hashes_everything_again_even_with_size_and_mtime_restored(
        server, cache, policy, capsys):
    _, path, data = fetched_once(server, cache, policy)
    st = path.stat()
    path.write_bytes(bytes(b ^ 0xFF for b in data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the record cannot tell
    assert cli.main(["fetch", "--verify"]) == 1
    assert "CHANGED" in capsys.readouterr().out and not path.exists()


# -- low: status codes, URLs, records, partial files, encodings, caps, OVAs -------------

def test_403_falls_back_to_the_next_url_like_404(server, cache, policy):
    data = bootable()
    forbidden = server.add("/a/x.img", data, faults=["403"])
    good = server.add("/b/x.img", data)
    got = fetch.fetch(fetch.Source((forbidden, good), sha256(data)), policy=policy,
                      cache=cache)
    assert got.url == good


def test_206_reply_to_a_request_without_range_is_a_clear_error(server, cache, policy):
    url = server.add("/p.img", bootable(), faults=["206"])
    with pytest.raises(fetch.FetchError, match="206 Partial Content"):
        fetch.fetch(fetch.Source((url,), sha256(bootable())), policy=policy, cache=cache)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.img",
                                 "127.0.0.1/x.img", "/etc/passwd"])
def test_file_ftp_and_schemeless_urls_are_clear_errors(url, cache, policy):
    with pytest.raises(fetch.FetchError, match=r"not an http\(s\) URL"):
        fetch.fetch(fetch.Source((url,), sha256(b"x")), policy=policy, cache=cache)


STREAM = ('format = "raw"\nstream = "flatcar"\n'
          'stream_url = "https://x.test.invalid/current/version.txt"\n'
          'urls = ["https://x.test.invalid/{version}/tiny.img"]\n'
          'checksum_url = "https://x.test.invalid/{version}/tiny.img.DIGESTS"\n'
          'checksum_algorithm = "sha512"')


@pytest.mark.parametrize("record", ["{not json", json.dumps({"version": "1.2.3"})],
                         ids=["corrupt", "without-urls"])
def test_damaged_stream_version_record_is_a_clear_error(record, tiny, cache):
    stored = cache / "download" / "resolved" / "tiny.json"
    stored.parent.mkdir(parents=True)
    stored.write_text(record)
    e = unavailable(tiny(STREAM), offline=True)
    assert "damaged" in str(e) and str(stored) in str(e)


def test_stale_partial_from_another_file_restarts_from_zero(server, cache, policy):
    data = bootable(100_000)
    url = server.add("/s.img", data)
    partial = fetch.url_dir(url, cache) / "data.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(bootable(40_000, seed=9))  # not a prefix of this file
    got = fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert got.path.read_bytes() == data
    assert [r.range for r in server.requests_for("/s.img")] == ["bytes=40000-", None]


def test_identity_encoding_is_asked_for_so_a_compressing_server_verifies(server, cache,
                                                                        policy):
    data = bootable()
    url = server.add("/z.img", data, faults=["gzip"])
    fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert [r.accept_encoding for r in server.requests_for("/z.img")] == ["identity"]


def test_small_xz_expanding_past_the_cap_is_refused(server, tiny, cache, monkeypatch):
    bomb = lzma.compress(bytes(16 * 2**20)) * 16  # 16 xz streams: 256 MiB of zeros
    assert len(bomb) < 64 * 1024
    monkeypatch.setenv("HARNESS_IMAGE_MAX_MIB", "64")
    e = unavailable(served(server, tiny, bomb, "raw", 'compression = "xz"', "bomb.img.xz"))
    assert e.what == "too large" and "64 MiB" in str(e)
    assert all(p.stat().st_size <= 64 * 2**20 for p in cache.rglob("*") if p.is_file())


def test_the_catalog_entry_can_set_its_own_cap(server, tiny, cache):
    xz = lzma.compress(bootable(3 * 2**20))
    e = unavailable(served(server, tiny, xz, "raw", 'compression = "xz"\nmax_mib = 2',
                           "big.img.xz"))
    assert e.what == "too large" and "2 MiB" in str(e)


def test_non_tar_file_declared_as_ova_is_a_clear_error(server, tiny, cache):
    e = unavailable(served(server, tiny, bootable(), "ova", 'member = "*.vmdk"', "x.ova"))
    assert e.what == "not a disk image" and "not a tar archive" in str(e)

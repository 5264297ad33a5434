"""Without internet: one clear failure per distro, the list of files to bring, an import
that verifies them like a download, and mirrors (issue 21).

Every server here is the real local one on 127.0.0.1; a catalog host that is
not it (`*.invalid`, reserved by RFC 6761) is only ever reached through a
mirror or an import folder, or to see a real DNS failure.
"""

import json
import logging
import socket

import pytest

from harness import catalog, cli, images
from harness.images import fetch
from tests.helpers import bootable, sha256

CANONICAL = "https://download.test.invalid/tiny/1.0/tiny.img"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable(distro, **kw) -> images.ImageUnavailable:
    with pytest.raises(images.ImageUnavailable) as e:
        images.resolve(distro, **kw)
    return e.value


# -- one clear failure, classified, with the ways out ----------------------------------

def test_unreachable_host_names_distro_version_what_failed_and_every_way_out(tiny, cache,
                                                                           policy):
    url = f"http://127.0.0.1:{closed_port()}/tiny.img"
    e = unavailable(tiny(f'format = "raw"\nurls = ["{url}"]\ndigest = "{sha256(b"x")}"'),
                    policy=policy)
    assert e.distro == "tiny" and e.version == "Tiny 1.0" and e.what == "connection refused"
    text = str(e)
    for words in ("tiny (Tiny 1.0)", "connection refused", url, "--image PATH",
                  "HARNESS_IMAGE_TINY=PATH", "harness fetch --import DIR tiny",
                  "harness fetch --urls tiny", "HARNESS_MIRRORS=127.0.0.1=URL"):
        assert words in text
    assert "Traceback" not in text and "HTTPConnectionPool" not in text
    assert "\n" not in e.line() and "connection refused" in e.line()


def test_a_name_dns_cannot_resolve_is_reported_as_dns_and_not_retried(tiny, cache, policy,
                                                                       caplog):
    e = unavailable(tiny(f'format = "raw"\nurls = ["{CANONICAL}"]\n'
                         f'digest = "{sha256(b"x")}"'), policy=policy)
    assert e.what == "DNS" and "cannot resolve download.test.invalid" in str(e)
    assert "retry" not in caplog.text


def test_tls_failure_is_reported_as_tls(tiny, cache, server, policy):
    server.add("/tiny.img", bootable())
    https = server.url("/tiny.img").replace("http://", "https://")  # TLS to a plain server
    e = unavailable(tiny(f'format = "raw"\nurls = ["{https}"]\ndigest = "{sha256(b"x")}"'),
                    policy=policy)
    assert e.what == "TLS"


def test_http_status_is_reported_with_its_code(tiny, cache, server, policy):
    e = unavailable(tiny(f'format = "raw"\nurls = ["{server.url("/gone.img")}"]\n'
                         f'digest = "{sha256(b"x")}"'), policy=policy)
    assert e.what == "HTTP 404" and "HTTP 404" in e.line()


# -- mirrors ----------------------------------------------------------------------------

def with_mirror(policy: fetch.Policy, server) -> fetch.Policy:
    return fetch.Policy(**{**policy.__dict__, "mirrors": fetch.parse_mirrors(
        f"download.test.invalid={server.url('/mirror')}")})


def test_a_mirror_with_good_bytes_serves_the_catalog_url_and_the_log_says_so(
        tiny, cache, server, policy, caplog):
    data = bootable()
    server.add("/mirror/tiny/1.0/tiny.img", data)
    distro = tiny(f'format = "raw"\nurls = ["{CANONICAL}"]\ndigest = "{sha256(data)}"')
    with caplog.at_level(logging.INFO, "harness"):
        image = images.resolve(distro, policy=with_mirror(policy, server))
    assert image.source == CANONICAL and image.served_from.startswith(server.url("/mirror"))
    assert f"{CANONICAL} is served by {server.url('/mirror/tiny/1.0/tiny.img')}" in caplog.text
    # cached under the catalog's URL: found again without the mirror, offline
    assert images.resolve(distro, offline=True).digest == sha256(data)


def test_a_mirror_with_bad_bytes_is_refused_and_nothing_is_cached(tiny, cache, server, policy):
    data = bootable()
    server.add("/mirror/tiny/1.0/tiny.img", data, faults=["wrong"])
    distro = tiny(f'format = "raw"\nurls = ["{CANONICAL}"]\ndigest = "{sha256(data)}"')
    e = unavailable(distro, policy=with_mirror(policy, server))
    assert e.what == "digest" and server.url("/mirror/tiny/1.0/tiny.img") in str(e)
    assert f"expected {sha256(data)}" in str(e)
    assert fetch.cached(CANONICAL, cache) is None


def test_mirror_setting_is_read_from_harness_mirrors(monkeypatch):
    monkeypatch.setenv("HARNESS_MIRRORS", "github.com=https://m.example/gh, a.org=http://b/")
    policy = fetch.Policy.from_env()
    assert fetch.locate("https://github.com/rancher/os/x.iso", policy) == \
        "https://m.example/gh/rancher/os/x.iso"
    assert fetch.locate("https://other.org/x", policy) == "https://other.org/x"


@pytest.mark.parametrize("bad", ["github.com", "=https://x", "github.com=ftp://x"])
def test_a_malformed_mirror_is_a_usage_error(bad, capsys, caplog):
    assert cli.main(["fetch", "rancheros", "--mirror", bad]) == 2
    assert bad.split("=")[-1] in caplog.text


# -- harness fetch --urls ---------------------------------------------------------------

DOWNLOADED = sorted(n for n, d in catalog.load().items() if not d.builtin)


@pytest.mark.parametrize("name", DOWNLOADED)
def test_urls_lists_every_file_of_every_downloaded_entry(name, cache, capsys):
    assert cli.main(["fetch", "--urls", "--json", "--offline", name]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    img = catalog.get(name).image
    urls = {f["url"] for f in entry["files"]}
    if img.stream:  # never resolved here: the version file, and a note for the rest
        assert img.stream_url in urls and entry["note"]
        return
    assert set(img.urls) <= urls
    for extra in (img.checksum_url, img.signature_url):
        assert not extra or extra in urls
    assert all(f["digest"] == img.digest for f in entry["files"] if f["role"] == "image")


def test_urls_plain_is_one_url_a_line_for_curl_and_wget(capsys):
    assert cli.main(["fetch", "--urls", "rancheros", "atomic-f22"]) == 0
    lines = capsys.readouterr().out.splitlines()
    img = catalog.get("rancheros").image
    assert lines[:2] == [img.urls[0], img.checksum_url]
    assert all(line.startswith("https://") and " " not in line for line in lines)


# -- harness fetch --import DIR ---------------------------------------------------------

def test_import_of_good_files_verifies_them_and_fills_the_cache(tiny, cache, tmp_path,
                                                                monkeypatch):
    data = bootable()
    folder = tmp_path / "carried"
    folder.mkdir()
    (folder / "tiny.img").write_bytes(data)
    (folder / "SHA256SUMS").write_text(f"{sha256(data).split(':')[1]}  tiny.img\n")
    distro = tiny(f'format = "raw"\nurls = ["{CANONICAL}"]\n'
                  'checksum_url = "https://download.test.invalid/tiny/1.0/SHA256SUMS"\n'
                  'checksum_algorithm = "sha256"')
    # the folder's own SHA256SUMS vouches for nothing: taken only on the user's word
    image = images.resolve(distro, policy=fetch.Policy(import_dir=str(folder),
                                                       trust_import=True))
    assert image.digest == sha256(data) and image.served_from == str(folder / "tiny.img")
    assert image.verified_by == (f"the checksum file {folder / 'SHA256SUMS'} from the import "
                                 "folder, on the user's word (--trust-import)")
    assert fetch.cached(CANONICAL, cache)[0].read_bytes() == data
    assert images.resolve(distro, offline=True).path == image.path


def test_import_of_a_tampered_file_names_both_digests_and_never_enters_the_cache(
        tmp_path, cache, caplog):
    atomic = catalog.get("atomic-f22")  # its digest is pinned in the catalog
    folder = tmp_path / "carried"
    folder.mkdir()
    tampered = folder / atomic.image.urls[0].rsplit("/", 1)[1]
    tampered.write_bytes(b"not the Fedora image")
    assert cli.main(["fetch", "--import", str(folder), "atomic-f22"]) == 2
    assert f"expected {atomic.image.digest}" in caplog.text
    assert f"got {fetch.file_digest(tampered)}" in caplog.text
    assert all(fetch.cached(u, cache) is None for u in atomic.image.urls)
    assert not list(fetch.download_dir(cache).glob("*/data*"))


def test_import_from_a_folder_that_is_not_there_is_a_usage_error(tmp_path, caplog):
    assert cli.main(["fetch", "--import", str(tmp_path / "nope"), "atomic-f22"]) == 2
    assert "not a folder" in caplog.text

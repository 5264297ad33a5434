"""The fetcher against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

No test here contacts any other host: every URL is the local server's.
"""

import bz2
import dataclasses
import gzip
import hashlib
import json
import lzma
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from harness import catalog, cli, images
from harness.images import build, convert, fetch
from tools.localserver import LocalServer

REPO = Path(__file__).resolve().parents[2]


def payload(size: int = 64 * 1024, seed: int = 1) -> bytes:
    """Incompressible-enough bytes, the same for a given seed."""
    out, block = bytearray(), str(seed).encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def disk_bytes(size: int = 64 * 1024, seed: int = 1) -> bytes:
    """Bytes that look like a raw disk: a boot-sector signature at 510 (as an MBR has)."""
    data = bytearray(payload(size, seed))
    data[510:512] = b"\x55\xaa"
    return bytes(data)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gets(server: LocalServer, path: str) -> list[int]:
    return [r.status for r in server.requests_for(path)]


# -- download, verify, cache -----------------------------------------------------------

def test_download_is_verified_and_cached_beside_its_digest(server, cache, policy, capsys):
    data = payload()
    url = server.add("/a.img", data)
    got = fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    d = fetch.url_dir(url, cache)
    assert got.path == d / "data" and got.downloaded
    assert (d / "data").read_bytes() == data
    assert (d / "digest").read_text().strip() == sha256(data)
    assert (d / "url").read_text().strip() == url
    assert not (d / "data.partial").exists()
    again = fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert again.path == got.path and not again.downloaded
    assert gets(server, "/a.img") == [200]  # the second fetch never asked the server
    line = capsys.readouterr().err
    assert "fetch a.img:" in line and "MiB/s" in line and "0.1 MiB" in line


def test_dropped_connection_resumes_with_a_range_request(server, cache, policy):
    data = payload(200_000)
    url = server.add("/b.img", data, faults=["drop:70000"])
    got = fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert got.path.read_bytes() == data
    reqs = server.requests_for("/b.img")
    assert [r.status for r in reqs] == [200, 206]
    assert reqs[1].range == "bytes=70000-"


def test_a_file_served_from_disk_resumes_from_its_offset(server, cache, policy, tmp_path):
    """The bench's server sends file bodies with sendfile; a resume starts mid-file."""
    data = payload(300_000)
    source = tmp_path / "on-disk.img"
    source.write_bytes(data)
    url = server.add("/disk.img", source, faults=["drop:123457"])
    got = fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert got.path.read_bytes() == data
    assert [r.range for r in server.requests_for("/disk.img")] == [None, "bytes=123457-"]


def test_a_partial_file_left_by_a_killed_run_is_resumed(server, cache, policy):
    data = payload(100_000)
    url = server.add("/k.img", data)
    d = fetch.url_dir(url, cache)
    d.mkdir(parents=True)
    (d / "data.partial").write_bytes(data[:40_000])
    fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert [r.range for r in server.requests_for("/k.img")] == ["bytes=40000-"]
    assert (d / "data").read_bytes() == data


def test_server_ignoring_range_makes_the_download_start_over(server, cache, policy):
    data = payload(100_000)
    url = server.add("/c.img", data, faults=["drop:30000", "norange"])
    got = fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert got.path.read_bytes() == data
    assert gets(server, "/c.img") == [200, 200]


def test_503_then_200_is_retried(server, cache, policy):
    data = payload()
    url = server.add("/d.img", data, faults=["503"])
    fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert gets(server, "/d.img") == [503, 200]


def test_retries_stop_after_the_configured_attempts(server, cache, policy):
    url = server.add("/e.img", payload(), faults=["503"] * 10)
    with pytest.raises(fetch.FetchError, match="503"):
        fetch.fetch(fetch.Source((url,), sha256(payload())), policy=policy, cache=cache)
    assert gets(server, "/e.img") == [503] * policy.attempts


def test_404_is_not_retried(server, cache, policy):
    url = server.url("/missing.img")
    with pytest.raises(fetch.FetchError, match="404"):
        fetch.fetch(fetch.Source((url,), sha256(b"x")), policy=policy, cache=cache)
    assert gets(server, "/missing.img") == [404]


def test_a_mirror_is_tried_when_the_first_url_is_gone(server, cache, policy):
    data = payload()
    good = server.add("/mirror/f.img", data)
    got = fetch.fetch(fetch.Source((server.url("/gone/f.img"), good), sha256(data)),
                      policy=policy, cache=cache)
    assert got.url == good


def test_wrong_bytes_are_rejected_without_retry_and_leave_nothing(server, cache, policy):
    data = payload()
    url = server.add("/g.img", data, faults=["wrong"])
    with pytest.raises(fetch.DigestMismatch) as e:
        fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert f"expected {sha256(data)}" in str(e.value)
    assert f"got {sha256(bytes(b ^ 0xFF for b in data))}" in str(e.value)
    assert gets(server, "/g.img") == [200]
    assert not fetch.url_dir(url, cache).exists()
    assert fetch.cached(url, cache) is None


def test_a_stalled_server_times_out_and_is_retried(server, cache, policy):
    data = payload()
    # The stall is six times the policy's read timeout: a fetcher that waited it out
    # would get the file on its first request.
    url = server.add("/h.img", data, faults=["stall:3"])
    fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert gets(server, "/h.img") == [200, 200]  # gave up on the stall, then again


def test_a_slow_server_is_waited_for(server, cache, policy):
    data = payload(60_000)
    url = server.add("/slow.img", data, faults=["slow:200000"])
    got = fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    assert got.path.read_bytes() == data and gets(server, "/slow.img") == [200]


def test_the_upstream_checksum_file_supplies_the_digest(server, cache, policy):
    data = payload()
    url = server.add("/rel/i.img.xz", data)
    sums = f"{hashlib.sha256(b'other').hexdigest()}  other.iso\n" \
           f"{hashlib.sha256(data).hexdigest()} *i.img.xz\n"
    source = fetch.Source((url,), checksum_url=server.add("/rel/SHA256SUMS", sums.encode()),
                          checksum_algorithm="sha256")
    # The local server speaks plain HTTP: an unsigned checksum file needs the opt-in.
    insecure_ok = dataclasses.replace(policy, allow_insecure_http=True)
    assert fetch.fetch(source, policy=insecure_ok, cache=cache).digest == sha256(data)


def test_no_digest_at_all_is_refused_before_downloading(server, cache, policy):
    url = server.add("/j.img", payload())
    with pytest.raises(fetch.FetchError, match="no digest"):
        fetch.fetch(fetch.Source((url,)), policy=policy, cache=cache)
    assert gets(server, "/j.img") == []


@pytest.mark.parametrize("text", [
    "{h}  img.bin\n{o}  img.bin.sig\n",  # coreutils
    "SHA256 (img.bin) = {h}\nSHA256 (other) = {o}\n",  # BSD, Fedora's CHECKSUM
    "sha256: {h}  img.bin\nsha256: {o}  other.iso\n",  # prefixed lines
    "# MD5 HASH\n{m}  img.bin\n# SHA1 HASH\n{s}  img.bin\n# SHA256 HASH\n{h}  img.bin\n",
])
def test_checksum_file_layouts_are_read(text):
    h, o = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    m, s = hashlib.md5(b"a").hexdigest(), hashlib.sha1(b"a").hexdigest()
    assert fetch.parse_checksums(text.format(h=h, o=o, m=m, s=s), "img.bin", "sha256") == h


def test_checksum_file_without_the_name_is_an_error():
    with pytest.raises(fetch.FetchError, match=r"no sha512 digest for img\.bin"):
        fetch.parse_checksums(f"{'a' * 128}  img.bin.bz2\n", "img.bin", "sha512", "DIGESTS")


# -- two processes, one download --------------------------------------------------------

FETCH_IN_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from harness.images import fetch
    url, digest, cache = sys.argv[1:]
    got = fetch.fetch(fetch.Source((url,), digest), cache=Path(cache), label="child")
    print(json.dumps({"path": str(got.path), "downloaded": got.downloaded}))
""")


def test_two_processes_wanting_one_image_download_it_once(server, cache):
    data = payload(100_000)
    url = server.add("/lock.img", data, faults=["slow:250000"] * 2)  # 0.4 s each
    env = {**os.environ, "HARNESS_FETCH_BACKOFF": "0.01"}
    children = [subprocess.Popen([sys.executable, "-c", FETCH_IN_CHILD, url, sha256(data),
                                  str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env, cwd=REPO) for _ in range(2)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    assert gets(server, "/lock.img") == [200]
    assert {r["path"] for r in results} == {str(fetch.url_dir(url, cache) / "data")}
    assert sorted(r["downloaded"] for r in results) == [False, True]


# -- offline ----------------------------------------------------------------------------

def test_offline_says_what_is_missing_and_asks_nobody(server, cache, policy):
    data = payload()
    url = server.add("/o.img", data)
    with pytest.raises(fetch.NotCached, match=r"o\.img"):
        fetch.fetch(fetch.Source((url,), sha256(data)), offline=True, cache=cache)
    assert gets(server, "/o.img") == []
    fetch.fetch(fetch.Source((url,), sha256(data)), policy=policy, cache=cache)
    got = fetch.fetch(fetch.Source((url,), sha256(data)), offline=True, cache=cache)
    assert got.path.read_bytes() == data and gets(server, "/o.img") == [200]


# -- decompression and conversion -------------------------------------------------------

def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                          check=True).stdout


COMPRESSORS = {"xz": lzma.compress, "bz2": bz2.compress, "gz": gzip.compress, "zstd": _zstd}


def qemu_img_format(path: Path) -> str:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["format"]


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_each_compression_is_undone_then_converted_to_qcow2(kind, tmp_path, cache):
    raw = disk_bytes(1024 * 1024, seed=3)
    src = tmp_path / f"disk.img.{kind}"
    src.write_bytes(COMPRESSORS[kind](raw))
    digest = fetch.file_digest(src)
    disk = convert.to_qcow2(src, digest, "raw", cache=cache)
    out = convert.derived_dir(digest, cache)
    assert (out / "decompressed").read_bytes() == raw
    assert disk == out / "disk.qcow2" and qemu_img_format(disk) == "qcow2"
    before = disk.stat().st_mtime_ns
    assert convert.to_qcow2(src, digest, "raw", cache=cache) == disk
    assert disk.stat().st_mtime_ns == before  # a cached step is not run again


def test_a_qcow2_download_is_used_as_it_is(tmp_path, cache):
    src = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    assert convert.to_qcow2(src, fetch.file_digest(src), "qcow2", cache=cache) == src


def test_the_vmdk_is_taken_out_of_an_ova_and_nothing_lands_outside_the_cache(tiny, tmp_path, cache):
    vmdk = tmp_path / "src.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o",
                    "subformat=streamOptimized", str(vmdk), "16M"], check=True)
    ova = tmp_path / "work" / "photon.ova"
    ova.parent.mkdir()
    with tarfile.open(ova, "w") as tar:
        tar.add(vmdk, arcname="../../escape-disk1.vmdk")  # a hostile member name
        ovf = tmp_path / "x.ovf"
        ovf.write_text("<Envelope/>")
        tar.add(ovf, arcname="photon.ovf")
    digest = fetch.file_digest(ova)
    disk = convert.to_qcow2(ova, digest, "ova", "*.vmdk", cache=cache)
    assert qemu_img_format(disk) == "qcow2"
    out = convert.derived_dir(digest, cache)
    assert (out / "member.vmdk").read_bytes() == vmdk.read_bytes()
    assert not list(tmp_path.rglob("escape-disk1.vmdk"))


# -- through the catalog: images.resolve and the command line ---------------------------

def xz_tiny(tiny, image: str) -> catalog.Distro:
    """The shared `tiny` entry (tests/conftest.py) as an xz-compressed raw image."""
    return tiny(f'format = "raw"\ncompression = "xz"\n{image}')


@pytest.fixture
def fast_env(monkeypatch):
    for name, value in {"HARNESS_FETCH_BACKOFF": "0.01", "HARNESS_FETCH_READ_TIMEOUT": "2"
                        }.items():
        monkeypatch.setenv(name, value)


def test_resolve_fetches_and_converts_into_a_content_named_qcow2(tiny, server, cache, tmp_path,
                                                                  fast_env):
    raw = disk_bytes(512 * 1024)
    xz = lzma.compress(raw)
    url = server.add("/tiny.img.xz", xz)
    distro = xz_tiny(tiny, f'urls = ["{url}"]\ndigest = "{sha256(xz)}"')
    image = images.resolve(distro)
    assert image.key == f"tiny-{hashlib.sha256(xz).hexdigest()[:16]}"
    assert image.path.is_relative_to(cache) and qemu_img_format(image.path) == "qcow2"
    assert image.digest == sha256(xz) and image.source == url
    assert images.resolve(distro, offline=True).path == image.path


def test_resolve_offline_names_what_is_missing_and_how_to_provide_it(tiny, server, cache, tmp_path):
    url = server.add("/tiny.img.xz", b"never served")
    distro = xz_tiny(tiny, f'urls = ["{url}"]\ndigest = "{sha256(b"x")}"')
    with pytest.raises(images.ImageUnavailable) as e:
        images.resolve(distro, offline=True)
    for words in ("not cached", url, "--image PATH", "HARNESS_IMAGE_TINY=PATH"):
        assert words in str(e.value)
    assert gets(server, "/tiny.img.xz") == []


def test_the_distro_variable_names_a_local_file_used_instead(tiny, server, cache, tmp_path,
                                                               monkeypatch):
    local = tmp_path / "mine.img.gz"
    local.write_bytes(gzip.compress(disk_bytes(256 * 1024)))
    distro = xz_tiny(tiny, f'urls = ["{server.url("/gone.img.xz")}"]\n'
                            f'digest = "{fetch.file_digest(local)}"')
    monkeypatch.setenv("HARNESS_IMAGE_TINY", str(local))
    image = images.resolve(distro, offline=True)
    assert qemu_img_format(image.path) == "qcow2" and image.source == str(local.resolve())
    assert gets(server, "/gone.img.xz") == []


def test_a_local_file_not_matching_the_pinned_digest_is_refused(tiny, cache, tmp_path):
    local = tmp_path / "other.img"
    local.write_bytes(b"not the image")
    distro = xz_tiny(tiny, f'urls = ["http://127.0.0.1:9/x"]\ndigest = "{sha256(b"x")}"')
    with pytest.raises(images.ImageUsageError, match="expected sha256:"):
        images.resolve(distro, image_path=local)


def test_flatcar_current_is_resolved_to_a_version_and_remembered(tiny, server, cache, tmp_path,
                                                                  fast_env, monkeypatch):
    monkeypatch.setenv("HARNESS_ALLOW_INSECURE_HTTP", "1")  # unsigned DIGESTS over HTTP
    img = disk_bytes(300_000)
    server.add("/amd64-usr/current/version.txt", b"FLATCAR_BUILD=9\nFLATCAR_VERSION=4081.2.1\n")
    server.add("/amd64-usr/4081.2.1/f.img", img)
    digests = (f"# MD5 HASH\n{hashlib.md5(img).hexdigest()}  f.img\n"
               f"# SHA512 HASH\n{hashlib.sha512(img).hexdigest()}  f.img\n")
    server.add("/amd64-usr/4081.2.1/f.img.DIGESTS", digests.encode())
    base = server.url("/amd64-usr")
    distro = xz_tiny(tiny, f'stream = "flatcar"\nstream_url = "{base}/current/version.txt"\n'
                            f'urls = ["{base}/{{version}}/f.img"]\n'
                            f'checksum_url = "{base}/{{version}}/f.img.DIGESTS"\n'
                            'checksum_algorithm = "sha512"')
    image = images.resolve(distro)
    assert image.version == "4081.2.1" and image.digest.startswith("sha512:")
    again = images.resolve(distro, offline=True)  # no server needed to know the version
    assert again.version == "4081.2.1" and again.path == image.path


def test_fedora_coreos_stream_metadata_gives_url_digest_and_release(tiny, server, cache, tmp_path,
                                                                    fast_env, monkeypatch):
    monkeypatch.setenv("HARNESS_ALLOW_INSECURE_HTTP", "1")  # stream metadata over HTTP
    xz = lzma.compress(disk_bytes(200_000))
    url = server.add("/prod/fcos-41.qcow2.xz", xz)
    stream = {"stream": "stable", "architectures": {"x86_64": {"artifacts": {"qemu": {
        "release": "41.20241109.3.0", "formats": {"qcow2.xz": {"disk": {
            "location": url, "sha256": hashlib.sha256(xz).hexdigest(),
            "signature": url + ".sig"}}}}}}}}
    stream_url = server.add("/streams/stable.json", json.dumps(stream).encode())
    distro = xz_tiny(tiny, f'stream = "fedora-coreos"\nstream_url = "{stream_url}"')
    image = images.resolve(distro)
    assert image.version == "41.20241109.3.0" and image.source == url


def test_cli_fetch_flatcar_offline_fails_at_once_saying_how_to_provide_it(cache, caplog, server,
                                                                          monkeypatch):
    # Flatcar's host served by the local server: offline, it is never asked.
    monkeypatch.setenv("HARNESS_MIRRORS", f"stable.release.flatcar-linux.net={server.url('')}")
    monkeypatch.setenv("HARNESS_ALLOW_INSECURE_HTTP", "1")
    assert cli.main(["fetch", "flatcar", "--offline"]) == 2
    assert server.log == []
    text = caplog.text
    assert "not cached" in text and "--image PATH" in text and "HARNESS_IMAGE_FLATCAR" in text


def test_cli_fetch_refos_is_served_from_the_build_cache(capsys):
    if not (build.artifacts().root / "build.json").exists():
        pytest.skip("refos is not built in the cache for this recipe; `harness build` makes it")
    assert cli.main(["fetch", "refos"]) == 0
    assert str(build.artifacts().disk) in capsys.readouterr().out

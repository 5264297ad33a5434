"""Hostile caches, imports, mirrors and sizes (issue 31: #5, #6, #9 to #13 and the low
items about import folders). One test per attack, named for what it
stops.

Another user's files are made here and handed to uid 65534 with lchown, as
`chown -R` would. Servers are the real local one on 127.0.0.1 (tools/localserver.py),
over TLS with a certificate made by openssl for the test where HTTPS matters;
signatures are made by gpg with a throwaway key and checked with the real gpgv; a
full disk is a real tmpfs of a few MiB mounted for the test.
"""

import contextlib
import hashlib
import json
import logging
import lzma
import os
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import catalog, cli, images, safefs
from harness.images import build, convert, fetch
from tests.helpers import bootable, sha256
from tools.localserver import LocalServer

OTHER = 65534  # nobody
CANONICAL = "https://download.test.invalid/tiny/1.0/tiny.img"
SUMS = "https://download.test.invalid/tiny/1.0/SHA256SUMS"
SHADOW = "/etc/shadow"  # named as a backing file, never read by the test


def chown_tree(path: Path, uid: int = OTHER) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, uid)


def unavailable(distro, **kw) -> images.ImageUnavailable:
    with pytest.raises(images.ImageUnavailable) as e:
        images.resolve(distro, **kw)
    return e.value


def sums_of(data: bytes, name: str = "tiny.img") -> str:
    return f"{sha256(data).split(':')[1]}  {name}\n"


def pinned(tiny, url: str, data: bytes, extra: str = ""):
    return tiny(f'format = "raw"\nurls = ["{url}"]\ndigest = "{sha256(data)}"\n{extra}')


def from_sums(tiny, extra: str = ""):
    return tiny(f'format = "raw"\nurls = ["{CANONICAL}"]\nchecksum_url = "{SUMS}"\n'
                f'checksum_algorithm = "sha256"\n{extra}')


# -- #5: a cache another user owns feeds root planted images ----------------------------

def plant(cache: Path, url: str) -> tuple[Path, Path]:
    """What another user plants for `url`: a download record that says "verified"
    (url, data, digest, verified.json) and the qcow2 "derived" from it, backed by a
    host file. Returns (the entry, the derived qcow2)."""
    data = bootable()
    entry = fetch.url_dir(url, cache)
    entry.mkdir(parents=True)
    (entry / "url").write_text(url + "\n")
    (entry / "data").write_bytes(data)
    (entry / "digest").write_text(sha256(data) + "\n")
    st = (entry / "data").stat()
    (entry / "verified.json").write_text(json.dumps({"size": st.st_size,
                                                     "mtime_ns": st.st_mtime_ns}))
    derived = convert.derived_dir(sha256(data), cache)
    derived.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", SHADOW, "-F", "raw",
                    str(derived / "disk.qcow2"), "1M"], check=True)
    return entry, derived / "disk.qcow2"


def test_a_cache_another_user_owns_is_refused_by_fetch_offline(cache, caplog, capsys):
    url = catalog.get("rancheros").image.urls[0]  # its digest comes from a checksum file
    entry, disk = plant(cache, url)
    chown_tree(cache)
    assert cli.main(["fetch", "--offline", "rancheros"]) == 2
    assert "untrusted cache" in caplog.text and f"owned by uid {OTHER}" in caplog.text
    assert "chown -R" in caplog.text  # the way out
    assert str(disk) not in capsys.readouterr().out
    assert (entry / "data").exists() and disk.exists()  # refused, not deleted


def test_a_download_entry_another_user_owns_in_our_cache_is_refused(tiny, cache):
    entry, _ = plant(cache, CANONICAL)
    chown_tree(entry)
    e = unavailable(from_sums(tiny), offline=True)
    assert e.what == "untrusted cache" and str(entry) in str(e)


def test_a_derived_qcow2_with_a_backing_file_is_refused_even_in_our_own_cache(tiny, cache):
    plant(cache, CANONICAL)  # all ours: the qcow2 is inspected again on every use
    e = unavailable(from_sums(tiny), offline=True)
    assert e.what == "unsafe image" and SHADOW in str(e)


def test_a_refos_build_another_user_left_in_the_cache_is_not_booted(cache):
    out = build.artifacts()  # where this recipe's build is looked for
    out.root.mkdir(parents=True)
    (out.root / "build.json").write_text("{}\n")
    subprocess.run(["qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", SHADOW, "-F", "raw",
                    str(out.disk), "1M"], check=True)
    chown_tree(cache)
    e = unavailable(catalog.get("refos"))
    assert e.what == "untrusted cache" and f"owned by uid {OTHER}" in str(e)


# -- #6: root truncates files through lock symlinks in such a cache --------------------

@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of root's that a lock symlink points at."""
    p = tmp_path / "root-owned.conf"
    p.write_text("keep me\n")
    return p


def mirrored(server) -> fetch.Policy:
    return fetch.Policy(attempts=1, mirrors=fetch.parse_mirrors(
        f"download.test.invalid={server.url('/mirror')}"))


def test_a_lock_symlink_in_a_cache_another_user_owns_truncates_nothing(
        tiny, cache, server, victim):
    data = bootable()
    server.add("/mirror/tiny/1.0/tiny.img", data)
    lock = fetch.url_dir(CANONICAL, cache).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    chown_tree(cache)
    e = unavailable(pinned(tiny, CANONICAL, data), policy=mirrored(server))
    assert e.what == "untrusted cache"
    assert victim.read_text() == "keep me\n" and lock.is_symlink()
    assert server.requests_for("/mirror/tiny/1.0/tiny.img") == []


def lock_of_download(cache: Path, src: Path, server) -> tuple[Path, Callable[[], object]]:
    lock = fetch.url_dir(CANONICAL, cache).with_suffix(".lock")
    server.add("/mirror/tiny/1.0/tiny.img", src.read_bytes())
    source = fetch.Source((CANONICAL,), sha256(src.read_bytes()))
    return lock, lambda: fetch.fetch(source, policy=mirrored(server), cache=cache)


def lock_of_conversion(cache: Path, src: Path, server) -> tuple[Path, Callable[[], object]]:
    digest = fetch.file_digest(src)
    lock = convert.derived_dir(digest, cache) / "disk.qcow2.lock"
    return lock, lambda: convert.to_qcow2(src, digest, "raw", cache=cache)


@pytest.mark.parametrize("where", [lock_of_download, lock_of_conversion],
                         ids=["download", "conversion"])
def test_a_lock_that_is_a_symlink_is_refused_not_opened(where, cache, tmp_path, victim,
                                                        server):
    src = tmp_path / "tiny.img"
    src.write_bytes(bootable())
    lock, use = where(cache, src, server)
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    with pytest.raises(safefs.UntrustedCache, match="symlink"):
        use()
    assert victim.read_text() == "keep me\n"


# -- #9: an import certifies itself ---------------------------------------------------

@pytest.fixture
def made_up_rancheros(tmp_path: Path) -> Path:
    """A made-up rancheros.iso with a checksums.txt written to match it."""
    folder = tmp_path / "carried"
    folder.mkdir()
    (folder / "rancheros.iso").write_bytes(bootable(seed=66))
    (folder / "checksums.txt").write_text(sums_of(bootable(seed=66), "rancheros.iso"))
    return folder


def test_a_checksum_file_that_came_in_the_import_folder_certifies_nothing(
        made_up_rancheros, cache, caplog):
    assert cli.main(["fetch", "--import", str(made_up_rancheros), "rancheros"]) == 2
    assert "proves nothing" in caplog.text and "--trust-import" in caplog.text
    assert fetch.cached(catalog.get("rancheros").image.urls[0], cache) is None


def test_an_import_on_the_users_word_is_logged_and_recorded_as_such(
        made_up_rancheros, cache, caplog, capsys):
    assert cli.main(["fetch", "--import", str(made_up_rancheros), "--trust-import",
                     "rancheros"]) == 0
    assert "UNVERIFIED" in caplog.text
    out = capsys.readouterr().out
    assert "verified_by" in out and "on the user's word (--trust-import)" in out


def test_an_import_with_the_vendors_signature_needs_no_word_and_names_its_anchor(
        tiny, cache, signer, tmp_path):
    data = bootable()
    folder = tmp_path / "carried"
    folder.mkdir()
    (folder / "tiny.img").write_bytes(data)
    (folder / "tiny.img.DIGESTS.asc").write_text(signer.clearsign(sums_of(data)))
    distro = tiny(f'format = "raw"\nurls = ["{CANONICAL}"]\n'
                  f'checksum_url = "{CANONICAL}.DIGESTS"\nchecksum_algorithm = "sha256"\n'
                  f'signature_url = "{CANONICAL}.DIGESTS.asc"\nsignature_key = "{signer.key}"')
    image = images.resolve(distro, policy=fetch.Policy(import_dir=str(folder)))
    assert image.verified_by == (f"the checksum file {folder / 'tiny.img.DIGESTS.asc'}, "
                                 f"clearsigned with {signer.key.name}")


# -- #10: an https mirror that redirects to http ----------------------------------------

@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """The local server over TLS, with a certificate for 127.0.0.1 made here and
    trusted by requests for this test only."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with LocalServer(tls=(cert, key)) as s:
        yield s


def https_mirror(tls_server) -> fetch.Policy:
    return fetch.Policy(attempts=1, mirrors=fetch.parse_mirrors(
        f"download.test.invalid={tls_server.url('/mirror')}"))


def test_an_https_mirror_that_stays_on_https_is_trusted(tiny, cache, tls_server):
    data = bootable()
    tls_server.add("/mirror/tiny/1.0/tiny.img", data)
    tls_server.add("/mirror/tiny/1.0/SHA256SUMS", sums_of(data).encode())
    image = images.resolve(from_sums(tiny), policy=https_mirror(tls_server))
    assert image.verified_by.endswith("SHA256SUMS read over HTTPS")


def test_an_https_mirror_that_redirects_the_checksum_file_to_http_is_refused(
        tiny, cache, server, tls_server):
    data = bootable()
    tls_server.add("/mirror/tiny/1.0/tiny.img", data)
    plain = server.add("/SHA256SUMS", sums_of(data).encode())
    tls_server.add("/mirror/tiny/1.0/SHA256SUMS", b"", faults=[f"redirect:{plain}"])
    e = unavailable(from_sums(tiny), policy=https_mirror(tls_server))
    assert e.what == "plain HTTP" and "redirects to" in str(e)
    assert server.requests_for("/SHA256SUMS") == []
    assert fetch.cached(CANONICAL, cache) is None


def test_an_https_mirror_that_redirects_the_image_to_http_is_refused_without_the_opt_in(
        tiny, cache, server, tls_server, caplog):
    data = bootable()
    plain = server.add("/tiny.img", data)
    tls_server.add("/mirror/tiny/1.0/tiny.img", b"", faults=[f"redirect:{plain}"] * 2)
    distro = pinned(tiny, CANONICAL, data)
    assert unavailable(distro, policy=https_mirror(tls_server)).what == "plain HTTP"
    assert server.requests_for("/tiny.img") == []
    policy = fetch.Policy(**{**https_mirror(tls_server).__dict__, "allow_insecure_http": True})
    assert images.resolve(distro, policy=policy).digest == sha256(data)
    assert "INSECURE" in caplog.text and "redirects to plain HTTP" in caplog.text


# -- #11: mirror credentials leak ------------------------------------------------------

PASSWORD = "s3cret-pw"


def with_credentials(server) -> fetch.Policy:
    base = server.url("/mirror").replace("http://", f"http://mirror-user:{PASSWORD}@")
    return fetch.Policy(attempts=1, mirrors=fetch.parse_mirrors(
        f"download.test.invalid={base}"))


def test_mirror_credentials_never_reach_the_log_or_the_record(tiny, cache, server, caplog):
    data = bootable()
    server.add("/mirror/tiny/1.0/tiny.img", data)
    with caplog.at_level(logging.INFO, "harness"):
        image = images.resolve(pinned(tiny, CANONICAL, data), policy=with_credentials(server))
    record = json.dumps(image.record())  # what image.json in the artifacts holds
    assert "is served by http://***@127.0.0.1" in caplog.text
    assert image.served_from.startswith("http://***@127.0.0.1")
    assert PASSWORD not in caplog.text and PASSWORD not in record


def test_mirror_credentials_never_reach_an_error(tiny, cache, server, caplog):
    e = unavailable(pinned(tiny, CANONICAL, b"gone"), policy=with_credentials(server))
    assert e.what == "HTTP 404" and "http://***@127.0.0.1" in str(e)
    assert PASSWORD not in str(e) and PASSWORD not in caplog.text


def test_a_malformed_mirror_with_credentials_is_refused_without_showing_them(caplog):
    assert cli.main(["fetch", "--mirror", f"x.test=ftp://u:{PASSWORD}@h/", "tiny"]) == 2
    assert "not an http(s) URL" in caplog.text and PASSWORD not in caplog.text


# -- #12: CoreOS's binary detached signatures -------------------------------------------

def coreos_like(tiny, signer, url: str, data: bytes):
    """As coreos-647: image, DIGESTS (sha512) and a binary .sig of the image; returns
    the entry and the DIGESTS text."""
    sha512 = hashlib.sha512(data).hexdigest()
    return tiny(f'format = "raw"\nurls = ["{url}"]\n'
                f'checksum_url = "{url}.DIGESTS"\nchecksum_algorithm = "sha512"\n'
                f'signature_url = "{url}.sig"\nsignature_key = "{signer.key}"\n'
                ), f"# SHA512 HASH\n{sha512}  {url.rsplit('/', 1)[1]}\n"


def test_a_binary_detached_signature_verifies_when_downloaded(tiny, cache, server, signer):
    data = bootable()
    sig = signer.detached(data)
    assert not sig.isascii()  # the real binary form, as CoreOS publishes
    url = server.add("/647/coreos.img", data)
    distro, digests = coreos_like(tiny, signer, url, data)
    server.add("/647/coreos.img.DIGESTS", digests.encode())
    server.add("/647/coreos.img.sig", sig)
    image = images.resolve(distro)  # plain HTTP, but the vendor's signature vouches
    assert image.digest == "sha512:" + hashlib.sha512(data).hexdigest()
    assert f"the image's signature {url}.sig" in image.verified_by


def test_a_binary_detached_signature_verifies_through_an_import(tiny, cache, signer, tmp_path):
    data = bootable()
    folder = tmp_path / "carried"
    folder.mkdir()
    url = "http://release.test.invalid/647/coreos.img"
    distro, digests = coreos_like(tiny, signer, url, data)
    (folder / "coreos.img").write_bytes(data)
    (folder / "coreos.img.DIGESTS").write_text(digests)
    (folder / "coreos.img.sig").write_bytes(signer.detached(data))
    image = images.resolve(distro, policy=fetch.Policy(import_dir=str(folder)))
    assert "the image's signature" in image.verified_by


# -- #13: no size cap; a full disk --------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """A real tmpfs of `mib` MiB as the cache, so a full disk is a real ENOSPC and a
    regression fills that, not the host's disk."""
    mounted: list[Path] = []

    def mount(mib: int) -> Path:
        mnt = tmp_path / f"tmpfs-{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0755", "tmpfs",
                            str(mnt)], capture_output=True, text=True, check=False)
        if r.returncode:
            pytest.fail(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], check=False)


def files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_server_that_never_ends_is_cut_off_at_the_cap(tiny, server, tmpfs, monkeypatch):
    cache = tmpfs(64)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    monkeypatch.setenv("HARNESS_IMAGE_MAX_MIB", "10")
    url = server.add("/endless.img", b"", faults=["endless"])
    e = unavailable(pinned(tiny, url, b"x"), policy=fetch.Policy(attempts=1))
    assert e.what == "too large" and "10 MiB" in str(e)
    assert not list(cache.rglob("data.partial"))
    assert all(p.stat().st_size <= 10 * 2**20 for p in files_in(cache))


def test_a_download_the_server_says_is_over_the_cap_is_not_read(tiny, cache, server):
    data = bootable(3 * 2**20)
    url = server.add("/big.img", data)
    e = unavailable(pinned(tiny, url, data, "max_mib = 2"), policy=fetch.Policy(attempts=1))
    assert e.what == "too large" and "said the server" in str(e)
    assert fetch.cached(url, cache) is None and not list(cache.rglob("data*"))


def test_an_import_over_the_cap_is_refused_and_not_cached(tiny, cache, tmp_path):
    folder = tmp_path / "carried"
    folder.mkdir()
    data = bootable(3 * 2**20)
    (folder / "tiny.img").write_bytes(data)
    distro = pinned(tiny, CANONICAL, data, "max_mib = 2")
    e = unavailable(distro, policy=fetch.Policy(import_dir=str(folder)))
    assert e.what == "too large" and str(folder / "tiny.img") in str(e)
    assert fetch.cached(CANONICAL, cache) is None and not list(cache.rglob("data*"))


def test_a_full_disk_while_downloading_is_one_line_and_the_partial_file_goes(
        tiny, server, tmpfs, monkeypatch):
    cache = tmpfs(1)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    data = bootable(3 * 2**20)
    url = server.add("/big.img", data)
    e = unavailable(pinned(tiny, url, data), policy=fetch.Policy(attempts=1))
    assert e.what == "disk full" and "no space left" in str(e)
    assert "\n" not in e.detail and "Traceback" not in str(e)
    assert not list(cache.rglob("data.partial"))


def test_a_full_disk_while_unpacking_is_one_line_and_the_partial_file_goes(
        tiny, server, tmpfs, monkeypatch):
    cache = tmpfs(1)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    disk = bytearray(4 * 2**20)
    disk[510:512] = b"\x55\xaa"
    xz = lzma.compress(bytes(disk))  # a few KiB that unpack to 4 MiB
    url = server.add("/disk.img.xz", xz)
    e = unavailable(pinned(tiny, url, xz, 'compression = "xz"'),
                    policy=fetch.Policy(attempts=1))
    assert e.what == "disk full" and "no space left" in str(e)
    assert "\n" not in e.detail and not list(cache.rglob("*.partial"))


# -- low: special files as checksum files in an import folder ---------------------------

def fifo(path: Path) -> None:
    os.mkfifo(path)


def zero_link(path: Path) -> None:
    path.symlink_to("/dev/zero")


def zero_node(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # a /dev/zero of its own


@contextlib.contextmanager
def fed(path: Path) -> Iterator[None]:
    """If `path` is a FIFO, a writer that waits for a reader and gives it one line; it is
    released at the end whether or not anything opened the FIFO."""
    if not stat.S_ISFIFO(os.lstat(path).st_mode):
        yield
        return

    def feed() -> None:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY)  # returns once a reader opened the FIFO
            os.write(fd, b"not a checksum\n")
            os.close(fd)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield
    finally:
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets a waiting writer go
        writer.join()
        os.close(reader)


@pytest.mark.parametrize("make", [fifo, zero_link, zero_node],
                         ids=["fifo", "symlink-to-dev-zero", "char-device"])
def test_a_checksum_file_that_is_not_a_regular_file_is_refused_at_once(
        make, tiny, cache, tmp_path):
    folder = tmp_path / "carried"
    folder.mkdir()
    (folder / "tiny.img").write_bytes(bootable())
    make(folder / "SHA256SUMS")
    policy = fetch.Policy(import_dir=str(folder), trust_import=True)
    with fed(folder / "SHA256SUMS"):
        e = unavailable(from_sums(tiny), policy=policy)
    assert e.what == "import" and str(folder / "SHA256SUMS") in str(e)
    assert "symlink" in str(e) or "not a regular file" in str(e)

"""Turn a catalog entry into a concrete download: moving targets become versions.

Fedora CoreOS publishes stream metadata (JSON) naming the current release, its
URLs and their SHA-256; Flatcar's "current" directory has a version.txt. Either
way the run gets one concrete version, recorded in the cache so an offline run
(and the report) knows which image it used.
"""

import dataclasses
import json
import re

from harness import catalog
from harness.catalog import Distro
from harness.images import fetch

FCOS_FORMAT = "qcow2.xz"
FCOS_ARCH = "x86_64"


def source(distro: Distro, offline: bool = False,
           policy: fetch.Policy | None = None) -> fetch.Source:
    """The Source for a downloaded entry; online, moving targets are looked up again."""
    cap = distro.image.max_mib * 2**20  # 0: HARNESS_IMAGE_MAX_MIB, read by the fetcher
    return dataclasses.replace(_source(distro, offline, policy), max_bytes=cap)


def _source(distro: Distro, offline: bool, policy: fetch.Policy | None) -> fetch.Source:
    img = distro.image
    key = str(catalog.key_path(img)) if img.signature_key else ""
    if not img.stream:
        return fetch.Source(img.urls, img.digest, img.checksum_url, img.checksum_algorithm,
                            signature_url=img.signature_url, signature_key=key)
    if offline:
        last = fetch.last_resolution(distro.name)
        if last is None:
            raise fetch.NotCached(f"{distro.name}: never resolved online, so no version is "
                                  "known and nothing is cached")
        return _from_record(last, key)
    policy = policy or fetch.Policy.from_env()
    text = fetch.get_text(img.stream_url, policy)
    resolved = (fedora_coreos(text, img.stream_url) if img.stream == "fedora-coreos"
                else flatcar(text, distro))
    resolved = dataclasses.replace(resolved, signature_key=key)
    fetch.record_resolution(distro.name, {
        "urls": list(resolved.urls), "digest": resolved.digest,
        "checksum_url": resolved.checksum_url,
        "checksum_algorithm": resolved.checksum_algorithm, "version": resolved.version,
        "signature_url": resolved.signature_url, "digest_from": resolved.digest_from})
    return resolved


def _from_record(rec: dict, key: str) -> fetch.Source:
    text = {k: str(rec.get(k, "")) for k in ("digest", "checksum_url", "checksum_algorithm",
                                             "version", "signature_url", "digest_from")}
    return fetch.Source(tuple(rec["urls"]), signature_key=key, **text)


def fedora_coreos(text: str, where: str = "") -> fetch.Source:
    """The QEMU qcow2.xz of the stream's current release, with its SHA-256."""
    try:
        qemu = json.loads(text)["architectures"][FCOS_ARCH]["artifacts"]["qemu"]
        disk = qemu["formats"][FCOS_FORMAT]["disk"]
        return fetch.Source((disk["location"],), f"sha256:{disk['sha256']}",
                            version=qemu["release"], digest_from=where)
    except (KeyError, TypeError, ValueError) as e:
        raise fetch.FetchError(f"Fedora CoreOS stream metadata: no {FCOS_ARCH} qemu "
                               f"{FCOS_FORMAT} disk ({e!r})") from e


def flatcar(text: str, distro: Distro) -> fetch.Source:
    """Flatcar's version.txt (FLATCAR_VERSION=…) filled into the entry's URL patterns."""
    m = re.search(r"^FLATCAR_VERSION=(\S+)$", text, re.M)
    if not m:
        raise fetch.FetchError(f"{distro.image.stream_url}: no FLATCAR_VERSION line")
    version = m.group(1)
    img = distro.image
    return fetch.Source(tuple(u.format(version=version) for u in img.urls), img.digest,
                        img.checksum_url.format(version=version), img.checksum_algorithm,
                        version, img.signature_url.format(version=version))

"""First-boot media: what a distro reads on its first boot, built from one intent.

The intent (user, keys, hostname, extra configuration) is turned into the
distro's format as data: a template from seeds/ deep-merged with the intent
and the test's extra keys, then serialised. NoCloud is written here; the
other formats add a writer beside it.
"""

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pycdlib

from harness.keys import KeyPair
from harness.paths import REPO

SEEDS = REPO / "seeds"
HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class SeedError(ValueError):
    pass


@dataclass(frozen=True)
class Intent:
    """What every first-boot format must express."""

    hostname: str
    user: str
    authorized_keys: tuple[str, ...]
    host_key: KeyPair | None = None
    instance_id: str = "harness"
    extra: dict = field(default_factory=dict)  # cloud-config keys, merged as data

    def __post_init__(self) -> None:
        if not HOSTNAME.match(self.hostname):
            raise SeedError(f"hostname {self.hostname!r} is not a valid host name "
                            "(lowercase letters, digits and '-', at most 63)")


def merge(base: dict, extra: dict) -> dict:
    """Deep merge: tables merge key by key, lists are appended, scalars replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = merge(out[key], value)
        elif isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def cloud_config(intent: Intent) -> dict:
    config = json.loads((SEEDS / "cloud-config.json").read_text())
    config = merge(config, {
        "hostname": intent.hostname,
        "users": [{
            "name": intent.user,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": True,
            "ssh_authorized_keys": list(intent.authorized_keys),
        }],
    })
    if intent.host_key:
        config["ssh_keys"] = {
            "ed25519_private": intent.host_key.private_pem,
            "ed25519_public": intent.host_key.public,
        }
    return merge(config, intent.extra)


def user_data(intent: Intent) -> bytes:
    # JSON is YAML, so cloud-init reads it as cloud-config; no text templating.
    return b"#cloud-config\n" + json.dumps(cloud_config(intent), indent=2).encode() + b"\n"


def meta_data(intent: Intent) -> bytes:
    return json.dumps({"instance-id": intent.instance_id,
                       "local-hostname": intent.hostname}).encode() + b"\n"


def write_iso(dest: Path, label: str, files: dict[str, bytes]) -> Path:
    """An ISO 9660 image with Rock Ridge and Joliet names (cloud-init wants the
    lowercase names); `files` maps a path like "openstack/latest/user_data" to bytes."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    made: set[str] = set()
    for name, data in sorted(files.items()):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                iso.add_directory(_iso9660_name(directory), rr_name=parts[depth - 1],
                                  joliet_path="/" + directory)
                made.add(directory)
        iso.add_fp(io.BytesIO(data), len(data), _iso9660_name(name) + ";1",
                   rr_name=parts[-1], joliet_path="/" + name)
    iso.write(str(dest))
    iso.close()
    return dest


def _iso9660_name(path: str) -> str:
    return "/" + "/".join(re.sub(r"[^A-Z0-9_]", "_", p.upper())[:30] for p in path.split("/"))


@dataclass(frozen=True)
class Media:
    """What a machine is given at first boot, in whichever ways its distro reads.

    `disk` is attached as a read-only virtio disk (cloud-init does not see a
    SATA CD-ROM on Debian's cloud kernel); `fw_cfg` entries are QEMU firmware
    config items (Ignition); `kernel_args` are appended to the command line
    where the boot path allows it. `files` is what the media holds, kept as
    evidence (never with private keys)."""

    files: dict[str, bytes]
    disk: Path | None = None
    fw_cfg: tuple[tuple[str, Path], ...] = ()
    kernel_args: str = ""


def build(seed_format: str, intent: Intent, dest_dir: Path) -> Media:
    """The first-boot media for a catalog entry's `boot.seed` format."""
    if seed_format == "nocloud":
        files = {"user-data": user_data(intent), "meta-data": meta_data(intent)}
        return Media(files, disk=write_iso(dest_dir / "seed.iso", "cidata", files))
    raise SeedError(f"seed format {seed_format!r} has no writer yet")

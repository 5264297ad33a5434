"""What every format writer shares: the intent, its vocabulary check, the media
it produces, the deep merge, the ISO writer and the size limits of each medium."""

import base64
import io
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycdlib
import yaml

from harness.paths import REPO
from harness.seed.keys import KeyPair

# The first-boot documents, as data: each format's base document, the runcmd unit and
# examples of extra configuration. What shapes a guest: part of the saves' key.
SEEDS = REPO / "seeds"
# Used with fullmatch only: `$` would let a trailing newline through.
HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
UNIT_NAME = re.compile(r"[A-Za-z0-9@_.:\\-]+\.(service|socket|timer|path|mount|target)")
PERMISSIONS = re.compile(r"0?[0-7]{3,4}")
# One authorized_keys line (options, type, base64, comment): at least two fields and
# no line break, which would add a second key.
PUBLIC_KEY = re.compile(r"\S+[ \t]+\S[^\r\n]*")

# Largest payload each medium takes. The ISO and fw_cfg caps are the harness's
# policy, not the formats' (a seed carries configuration, cloud-init and
# Ignition hold it in memory; bulk data goes in with Machine.attach_disk). The
# command line cap is the x86 kernel's COMMAND_LINE_SIZE.
LIMITS = {"iso": 16 * 2**20, "fw_cfg": 16 * 2**20, "cmdline": 2048}


class SeedError(ValueError):
    """Input a first-boot format cannot take; the message names the field."""


# The generic vocabulary of Intent.extra: field -> (type, required, default).
USER_FIELDS = {"name": (str, True, None), "groups": (list, False, []),
               "ssh_authorized_keys": (list, False, []), "sudo": (bool, False, False),
               "shell": (str, False, "")}
FILE_FIELDS = {"path": (str, True, None), "content": (str, True, None),
               "permissions": (str, False, "0644")}
UNIT_FIELDS = {"name": (str, True, None), "content": (str, True, None),
               "enabled": (bool, False, True)}
LISTS = {"users": USER_FIELDS, "write_files": FILE_FIELDS, "units": UNIT_FIELDS}
NATIVE = ("cloud_config", "ignition", "rancher")  # format-native tables, merged as data
VOCABULARY = (*LISTS, "runcmd", *NATIVE)


def parse_extra(extra: dict | str | None) -> dict:
    """Check `extra` against the vocabulary and fill defaults; YAML text is accepted."""
    if extra is None or extra == "":
        return {}
    if isinstance(extra, str):
        if len(extra.encode()) > LIMITS["iso"]:
            raise SeedError(f"extra: {_mib(len(extra.encode()))} of YAML, more than any "
                            f"seed medium takes ({_mib(LIMITS['iso'])})")
        try:
            extra = yaml.load(extra, Loader=_NoAliases)  # a SafeLoader subclass
        except yaml.YAMLError as e:
            raise SeedError(f"extra: not valid YAML: {e}") from None
    if not isinstance(extra, dict):
        raise SeedError(f"extra: must be a mapping of {', '.join(VOCABULARY)}, "
                        f"got {type(extra).__name__}")
    out: dict[str, Any] = {}
    for key, value in extra.items():
        where = f"extra.{key}"
        if key in LISTS:
            out[key] = [_record(item, LISTS[key], f"{where}[{i}]")
                        for i, item in enumerate(_list(value, where))]
        elif key == "runcmd":
            out[key] = [_text(cmd, f"{where}[{i}]") for i, cmd in enumerate(_list(value, where))]
        elif key in NATIVE:
            if not isinstance(value, dict):
                raise SeedError(f"{where}: must be a mapping")
            out[key] = value
        else:
            raise SeedError(f"{where}: unknown key; the vocabulary is {', '.join(VOCABULARY)} "
                            "(format-native keys go under cloud_config, ignition or rancher)")
    return out


class _NoAliases(yaml.SafeLoader):
    """safe_load without aliases: a few hundred bytes of nested aliases expand to
    gigabytes (the "billion laughs"), and configuration needs none."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise SeedError(f"extra: YAML aliases (*name) are not accepted (line "
                            f"{mark.line + 1}, column {mark.column + 1}); write the value out")
        return super().compose_node(parent, index)


def _list(value: object, where: str) -> list:
    if not isinstance(value, list):
        raise SeedError(f"{where}: must be a list")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SeedError(f"{where}: must be a non-empty string")
    return value


def _record(item: object, fields: dict, where: str) -> dict:
    if not isinstance(item, dict):
        raise SeedError(f"{where}: must be a mapping")
    for key in item:
        if key not in fields:
            raise SeedError(f"{where}.{key}: unknown field; known: {', '.join(fields)}")
    out = {}
    for name, (kind, required, default) in fields.items():
        if name not in item:
            if required:
                raise SeedError(f"{where}.{name}: missing")
            out[name] = list(default) if isinstance(default, list) else default
            continue
        value = item[name]
        if not isinstance(value, kind) or (kind is list and
                                           not all(isinstance(v, str) for v in value)):
            expected = "list of strings" if kind is list else kind.__name__
            raise SeedError(f"{where}.{name}: must be a {expected}, got {value!r:.60}")
        out[name] = value
    _check_values(out, where)
    return out


def _check_values(record: dict, where: str) -> None:
    checks = {
        "path": (lambda v: v.startswith("/") and ".." not in v.split("/"), "an absolute path"),
        "permissions": (PERMISSIONS.fullmatch, "octal like '0644'"),
    }
    if "ssh_authorized_keys" in record:  # a user
        checks["name"] = (USERNAME.fullmatch, "a user name (lowercase, at most 32)")
        checks["ssh_authorized_keys"] = (lambda keys: all(PUBLIC_KEY.fullmatch(k) for k in keys),
                                         "one OpenSSH public key line per entry")
    elif "enabled" in record:  # a unit
        checks["name"] = (UNIT_NAME.fullmatch, "a systemd unit name like 'x.service'")
    for name, (ok, what) in checks.items():
        if name in record and not ok(record[name]):
            raise SeedError(f"{where}.{name}: {record[name]!r:.60} is not {what}")


MAC = re.compile(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}")
# Where a private interface's systemd-networkd file goes: before the image's own
# catch-all files (refos: 20-wired.network, `Name=en*` by DHCP), since networkd
# applies the first file in lexical order that matches a link (systemd.network(5)).
PRIVATE_NETWORK_FILE = "/etc/systemd/network/10-harness-private.network"


@dataclass(frozen=True)
class PrivateInterface:
    """A guest's NIC on a cluster's private network, configured statically on first
    boot: the NIC with `mac` gets `address` (with prefix, "10.87.0.11/24") and
    nothing else (no gateway, no DNS, no link-local or IPv6 autoconfiguration)."""

    mac: str
    address: str

    def __post_init__(self) -> None:
        if not isinstance(self.mac, str) or not MAC.fullmatch(self.mac):
            raise SeedError(f"private.mac: {self.mac!r} is not a lowercase MAC address")
        try:
            iface = ipaddress.IPv4Interface(self.address)
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
            raise SeedError(f"private.address: {self.address!r} is not an IPv4 address "
                            "with prefix, like 10.87.0.11/24") from None
        if "/" not in self.address or iface.network.prefixlen == 32:
            raise SeedError(f"private.address: {self.address!r} needs its subnet's prefix")

    def networkd_file(self) -> tuple[str, str, str]:
        """(path, content, mode) of the systemd-networkd file that configures it."""
        content = (f"# A cluster's private network, written by the harness's seed.\n"
                   f"[Match]\nMACAddress={self.mac}\n\n"
                   f"[Network]\nAddress={self.address}\nLinkLocalAddressing=no\n"
                   f"IPv6AcceptRA=no\n")
        return PRIVATE_NETWORK_FILE, content, "0644"


@dataclass(frozen=True)
class Intent:
    """What every first-boot format must express. `extra` is checked against the
    vocabulary (see harness.seed) when the intent is made, so bad input fails
    before anything is written or booted."""

    hostname: str
    user: str
    authorized_keys: tuple[str, ...]
    host_key: KeyPair | None = None
    instance_id: str = "harness"
    # Other host key types, given so the guest does not make them at boot
    # (harness.seed.keys); written only beside `host_key`, never trusted.
    spare_host_keys: tuple[KeyPair, ...] = ()
    extra: dict | str = field(default_factory=dict)
    # A cluster member's NIC on the private network (harness.vm.network), written as a
    # systemd-networkd file by the formats that can carry files.
    private: PrivateInterface | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hostname, str) or not HOSTNAME.fullmatch(self.hostname):
            raise SeedError(f"hostname: {self.hostname!r} is not a valid host name "
                            "(lowercase letters, digits and '-', at most 63)")
        if not USERNAME.fullmatch(self.user):
            raise SeedError(f"user: {self.user!r} is not a valid user name")
        for i, key in enumerate(self.authorized_keys):
            if not isinstance(key, str) or not PUBLIC_KEY.fullmatch(key):
                raise SeedError(f"authorized_keys[{i}]: not an OpenSSH public key line")
        object.__setattr__(self, "extra", parse_extra(self.extra))

    def host_keys(self) -> tuple[KeyPair, ...]:
        """Every host key the seed writes: the trusted one first, then the spares."""
        return (self.host_key, *self.spare_host_keys) if self.host_key else ()


@dataclass(frozen=True)
class Media:
    """What a machine is given at first boot, in whichever ways its distro reads.

    `disk` is attached as a read-only virtio disk (cloud-init does not see a
    SATA CD-ROM on Debian's cloud kernel); `fw_cfg` entries are QEMU firmware
    config items (Ignition); `kernel_args` are appended to the command line
    where the boot path allows it. `files` is what the media holds, kept as
    evidence: it includes the guest's throwaway host key when the format carries
    it. `host_key_given` is false where the guest makes its own host key, so the
    driver must learn the fingerprint another way (console, or trust on first
    use); `password_login` is set where no key can be given at all."""

    files: dict[str, bytes]
    disk: Path | None = None
    fw_cfg: tuple[tuple[str, Path], ...] = ()
    kernel_args: str = ""
    host_key_given: bool = False
    password_login: tuple[str, str] | None = None
    notes: tuple[str, ...] = ()


def host_key_files(intent: Intent) -> list[tuple[str, str, str]]:
    """(path, content, mode) of each host key the seed writes as plain files."""
    out = []
    for key in intent.host_keys():
        path = f"/etc/ssh/ssh_host_{key.kind}_key"
        out += [(path, key.private_pem, "0600"), (path + ".pub", key.public + "\n", "0644")]
    return out


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


def base_document(name: str) -> Any:
    """A format's base document from seeds/, parsed (JSON or YAML): data, never text."""
    path = SEEDS / name
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def seed_file(name: str) -> str:
    """A file of seeds/ as text, given to the guest as it is (a unit file)."""
    return (SEEDS / name).read_text(encoding="utf-8")


def refuse(extra: dict, keys: tuple[str, ...], fmt: str, why: str) -> None:
    """SeedError for the first of `keys` present in `extra`: the format lacks it."""
    for key in keys:
        if key in extra:
            raise SeedError(f"extra.{key}: the {fmt} format cannot express it ({why})")


def check_native(table: dict, allowed: set[str], where: str, fmt: str) -> None:
    for key in table:
        if key not in allowed:
            raise SeedError(f"{where}.{key}: not a key {fmt} reads; "
                            f"it reads {', '.join(sorted(allowed))}")


def check_sizes(extra: dict, medium: str) -> None:
    """Each written file must fit the medium (named by field, before anything is built)."""
    limit = LIMITS[medium]
    for i, f in enumerate(extra.get("write_files", ())):
        if len(f["content"].encode()) > limit:
            raise SeedError(f"extra.write_files[{i}].content: {_mib(len(f['content'].encode()))}"
                            f" does not fit the {medium} medium (limit {_mib(limit)})")


def check_total(files: dict[str, bytes], medium: str) -> None:
    total = sum(len(v) for v in files.values())
    if total > LIMITS[medium]:
        raise SeedError(f"extra: the seed is {_mib(total)}, more than the {medium} medium "
                        f"takes ({_mib(LIMITS[medium])})")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def data_url(content: str | bytes) -> str:
    """An RFC 2397 data URL, as Ignition takes file contents."""
    raw = content.encode() if isinstance(content, str) else content
    return "data:;base64," + base64.b64encode(raw).decode()


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
    with private_file(dest) as f:
        iso.write_fp(f)
    iso.close()
    return dest


def private_file(path: Path):
    """`path` opened for writing, mode 0600 whatever the umask or an older file's mode,
    never through a symlink: seeds carry the guest's private host key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def _iso9660_name(path: str) -> str:
    return "/" + "/".join(re.sub(r"[^A-Z0-9_]", "_", p.upper())[:30] for p in path.split("/"))

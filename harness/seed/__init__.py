"""First-boot media: what a distro reads on its first boot, built from one intent.

An `Intent` (hostname, user, the run's public keys, the guest's host key and a
test's extra configuration) becomes the distro's format as data: the format's
base document from seeds/ deep-merged with the intent, then serialised. Nothing is ever
concatenated as text, and bad input is refused with a SeedError naming the
field before anything is written or booted.

The extra configuration (`Intent.extra`, a dict or YAML text) has a generic
vocabulary that every format maps:

    users:        [{name, groups: [..], ssh_authorized_keys: [..], sudo: bool, shell}]
    write_files:  [{path, content, permissions: "0644"}]
    runcmd:       ["command", ...]      run once, at the end of the first boot
    units:        [{name: "x.service", content, enabled: true}]
    cloud_config: {...}  native keys of the cloud-config dialect (merged as data)
    ignition:     {...}  native Ignition keys (merged as data)
    rancher:      {...}  RancherOS `rancher:` keys

How each format maps it (a key a format cannot express is a SeedError):

    format       medium                              users  files  runcmd  units  host key
    nocloud      ISO `cidata` (user-data, meta-data)  yes    yes    yes     (1)    ssh_keys
    config-2     ISO `config-2` (openstack/latest/    yes    yes    yes(2)  yes(2) ssh_keys or
                 user_data, meta_data.json)                                        file (3)
    ignition     JSON via fw_cfg                      yes    yes    (4)     yes    file (3)
    rancher      config-2 ISO, or also cmdline (5)    no     yes    yes     no     not given
    ubuntu-core  ISO `cidata` (6)                     yes    yes    yes     (1)    ssh_keys (6)
    none         nothing: login ubuntu/ubuntu (7)     no     no     no      no     not given

 (1) written to /etc/systemd/system and enabled by `systemctl enable --now` in runcmd.
 (2) cloud-init dialect as nocloud; coreos-cloudinit dialect (catalog seed option
     `dialect = "coreos-cloudinit"`) puts units in `coreos.units` and, having no
     runcmd, runs the commands from a oneshot unit that marks itself done.
 (3) /etc/ssh/ssh_host_ed25519_key written as a file. Booted with Ignition on
     refos-ignition (tests/driver/test_ignition.py): the pinned key is the one sshd
     offers. Unverified on Fedora CoreOS and Flatcar themselves: that their key
     generation leaves an existing key alone.
 (4) a oneshot unit, as in (2).
 (5) catalog seed option `route = "cmdline"` adds `rancher.*` kernel arguments
     (scalar `rancher:` keys only; at most 2048 bytes). The driver can pass them only
     when it boots a kernel directly, not when firmware boots the disk, so the
     config-2 ISO is always given as well.
 (6) Ubuntu Core: the route its docs describe for a user without console-conf is a
     system-user assertion in auto-import.assert on removable media, which must be
     signed by the brand of the device's model: the harness cannot sign for
     Canonical's models, so it is not built. A NoCloud `cidata` seed is written
     instead. Unverified: that a stock (signed-grade) Ubuntu Core 22/24 image lets
     cloud-init read it on first boot, and that users, runcmd, units and ssh_keys
     apply there (its / is read-only; users go to extrausers).
 (7) Ubuntu Snappy 15.04 runs cloud-init from the NoCloud seed its image builder
     baked in (writable/system-data/var/lib/cloud/seed/nocloud-net/, password
     ubuntu); nothing is attached, so the harness logs in by that password and
     cannot verify the host key in advance (Media.password_login,
     Media.host_key_given = False). An attached CIDATA disk would replace the baked
     user-data (a guess; see the catalog's snappy-1504 entry). harness.vm.ssh.trust_for
     pins the key the console prints, else trusts the first key offered with a WARNING.

A cluster member's private interface (`Intent.private`, harness.vm.network) is a
systemd-networkd file matched by MAC, `/etc/systemd/network/10-harness-private.network`,
written like any file: by write_files for cloud-init (then `networkctl reload`,
first in runcmd: cloud-init writes after networkd started) and coreos-cloudinit
(the reload in its runcmd unit; unverified on CoreOS and Flatcar), by
storage.files for Ignition (in place before networkd starts). RancherOS (no
networkd) and `none` (no media) refuse it.

Seed options (catalog `boot.seed_options`): `ignition_spec` (default 3.3.0),
`fw_cfg` (opt/com.coreos/config for Fedora CoreOS, opt/org.flatcar-linux/config
for Flatcar), `dialect` for config-2, `route` for rancher.

Also unverified: the RancherOS keys `runcmd` and `mounts`, and coreos-cloudinit's
reading of `meta_data.json`, come from their docs; neither reader is packaged in
Debian, so only the config-2 layout is read back (by cloud-init's reader).
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.seed import cloudconfig, ignition
from harness.seed.base import (
    LIMITS,
    Intent,
    Media,
    PrivateInterface,
    SeedError,
    base_document,
    check_sizes,
    check_total,
    merge,
    private_file,
    write_iso,
)

__all__ = ["FORMATS", "WRITERS", "Intent", "Media", "PrivateInterface", "SeedError", "build",
           "check_options", "merge", "write_iso"]

@dataclass(frozen=True)
class Writer:
    """One first-boot format: its writer and the seed options it takes, each with
    its allowed values and default (catalog `boot.seed_options`)."""

    write: Callable[[Intent, Path, dict[str, str]], Media]
    options: dict[str, tuple[tuple[str, ...], str]]


# seed format -> Writer; each writer below registers itself with @writer(...).
WRITERS: dict[str, Writer] = {}


def writer(name: str, **options: tuple[tuple[str, ...], str]):
    """Register the function below as the writer of format `name`; `options` maps
    each seed option to (allowed values, default)."""
    def register(fn: Callable[[Intent, Path, dict[str, str]], Media]):
        WRITERS[name] = Writer(fn, options)
        return fn
    return register


def build(seed_format: str, intent: Intent, dest_dir: Path,
          options: Mapping[str, str] | None = None) -> Media:
    """The first-boot media for a catalog entry's `boot.seed` format, written to
    `dest_dir`; `options` are the entry's `boot.seed_options`."""
    opts = check_options(seed_format, options or {})
    dest_dir.mkdir(parents=True, exist_ok=True)
    return WRITERS[seed_format].write(intent, dest_dir, opts)


def check_options(seed_format: str, given: Mapping[str, str]) -> dict[str, str]:
    """The options for `seed_format` with defaults filled in; SeedError naming the
    format or option when one is unknown or has a value the format does not take."""
    if seed_format not in WRITERS:
        raise SeedError(f"seed format {seed_format!r} is unknown; "
                        f"known: {', '.join(WRITERS)}")
    allowed = WRITERS[seed_format].options
    for key, value in given.items():
        if key not in allowed:
            raise SeedError(f"seed option {key!r} does not apply to {seed_format}; "
                            f"it takes {', '.join(allowed) or 'none'}")
        if value not in allowed[key][0]:
            raise SeedError(f"seed option {key}: {value!r} is not one of "
                            f"{', '.join(allowed[key][0])}")
    return {k: given.get(k, default) for k, (_, default) in allowed.items()}


def _iso(dest: Path, label: str, files: dict[str, bytes]) -> Path:
    check_total(files, "iso")
    return write_iso(dest, label, files)


@writer("nocloud")
def _nocloud(intent: Intent, dest: Path, opts: dict) -> Media:
    check_sizes(intent.extra, "iso")
    files = {"user-data": cloudconfig.document(cloudconfig.cloud_init(intent)),
             "meta-data": cloudconfig.nocloud_meta(intent)}
    return Media(files, disk=_iso(dest / "seed.iso", "cidata", files),
                 host_key_given=intent.host_key is not None)


@writer("config-2", dialect=(("cloud-init", "coreos-cloudinit"), "cloud-init"))
def _config_drive(intent: Intent, dest: Path, opts: dict) -> Media:
    check_sizes(intent.extra, "iso")
    coreos = opts["dialect"] == "coreos-cloudinit"
    config = cloudconfig.coreos_cloudinit(intent) if coreos else cloudconfig.cloud_init(intent)
    return _openstack_iso(intent, dest, config, intent.host_key is not None)


def _openstack_iso(intent: Intent, dest: Path, config: dict, host_key: bool,
                   kernel_args: str = "") -> Media:
    files = {"openstack/latest/user_data": cloudconfig.document(config),
             "openstack/latest/meta_data.json": cloudconfig.openstack_meta(intent)}
    return Media(files, disk=_iso(dest / "seed.iso", "config-2", files),
                 host_key_given=host_key, kernel_args=kernel_args)


@writer("rancher", route=(("config-2", "cmdline"), "config-2"))
def _rancher(intent: Intent, dest: Path, opts: dict) -> Media:
    check_sizes(intent.extra, "iso")
    config = cloudconfig.rancher(intent)
    args = ""
    if opts["route"] == "cmdline":
        args = cloudconfig.rancher_cmdline(config)
        if len(args.encode()) > LIMITS["cmdline"]:
            raise SeedError(f"extra.rancher: {len(args.encode())} bytes of kernel arguments, "
                            f"more than the command line takes ({LIMITS['cmdline']})")
    return _openstack_iso(intent, dest, config, False, args)


@writer("ignition", ignition_spec=(ignition.SPECS, "3.3.0"),
        fw_cfg=(ignition.FW_CFG, "opt/com.coreos/config"))
def _ignition(intent: Intent, dest: Path, opts: dict) -> Media:
    check_sizes(intent.extra, "fw_cfg")
    data = json.dumps(ignition.config(intent, opts["ignition_spec"]), indent=2).encode() + b"\n"
    files = {"config.ign": data}
    check_total(files, "fw_cfg")
    path = dest / "config.ign"
    with private_file(path) as f:  # libvirt gives it to QEMU's user while the domain runs
        f.write(data)
    return Media(files, fw_cfg=((opts["fw_cfg"], path),),
                 host_key_given=intent.host_key is not None)


@writer("ubuntu-core")
def _ubuntu_core(intent: Intent, dest: Path, opts: dict) -> Media:
    check_sizes(intent.extra, "iso")
    config = cloudconfig.cloud_init(intent, "cloud-config-ubuntu-core.json")
    files = {"user-data": cloudconfig.document(config),
             "meta-data": cloudconfig.nocloud_meta(intent)}
    return Media(files, disk=_iso(dest / "seed.iso", "cidata", files),
                 host_key_given=intent.host_key is not None,
                 notes=("Ubuntu Core: CIDATA seed; unverified that a signed-grade image "
                        "reads it (see harness.seed)",))


@writer("none")
def _none(intent: Intent, dest: Path, opts: dict) -> Media:
    if intent.private is not None:
        raise SeedError("private: seed format 'none' attaches no first-boot media, so a "
                        "private interface cannot be configured")
    if intent.extra:
        key = next(iter(intent.extra))
        raise SeedError(f"extra.{key}: seed format 'none' attaches no first-boot media "
                        "(Snappy 15.04 reads only the seed baked into its image)")
    login = base_document("none-login.json")["login"]
    return Media({}, password_login=(login["user"], login["password"]), host_key_given=False,
                 notes=("no first-boot media: log in by password; the host key is the "
                        "guest's own and cannot be verified in advance",))



FORMATS = tuple(WRITERS)

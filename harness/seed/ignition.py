"""Ignition (Fedora CoreOS, Flatcar >= 3185.0.0): a JSON config at a spec 3.x
version, handed over through QEMU fw_cfg.

Spec 3.3.0 is the default: Ignition reads every 3.x version up to its own
(3.3.0 since Ignition 2.11; Flatcar reads it since 3185.0.0, current Fedora
CoreOS reads up to 3.5.0), and it is the newest that Debian's ignition-validate
(2.14) checks. Spec 2.x (older Flatcar and Container Linux) is not written: those
releases are given coreos-cloudinit's config-2 seed instead."""

from harness.seed.base import (
    Intent,
    SeedError,
    base_document,
    check_native,
    data_url,
    host_key_files,
    merge,
    refuse,
)
from harness.seed.cloudconfig import RUNCMD_UNIT, runcmd_script, runcmd_unit

SPECS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0")
FW_CFG = ("opt/com.coreos/config", "opt/org.flatcar-linux/config")
TOP_KEYS = {"ignition", "kernelArguments", "passwd", "storage", "systemd"}


def config(intent: Intent, spec: str) -> dict:
    """The Ignition config; runcmd becomes a oneshot unit run once, like cloud-init's."""
    if spec not in SPECS:
        raise SeedError(f"seed option ignition_spec: {spec!r} is not written; "
                        f"supported: {', '.join(SPECS)}")
    extra = intent.extra
    refuse(extra, ("cloud_config", "rancher"), "Ignition", "it reads Ignition JSON only")
    native = extra.get("ignition", {})
    check_native(native, TOP_KEYS, "extra.ignition", "Ignition")
    files = [_file("/etc/hostname", intent.hostname + "\n", "0644")]
    files += [_file(path, content, mode) for path, content, mode in host_key_files(intent)]
    if intent.private is not None:  # in place before networkd first starts: no reload
        files.append(_file(*intent.private.networkd_file()))
    files += [_file(f["path"], f["content"], f["permissions"]) for f in extra.get("write_files",
                                                                                   [])]
    units = [{"name": u["name"], "contents": u["content"], "enabled": u["enabled"]}
             for u in extra.get("units", [])]
    if extra.get("runcmd"):
        script = runcmd_script(extra["runcmd"])
        files.append(_file(script["path"], script["content"], script["permissions"]))
        units.append({"name": RUNCMD_UNIT, "contents": runcmd_unit(), "enabled": True})
    users = [{"name": intent.user, "sshAuthorizedKeys": list(intent.authorized_keys)}]
    users += [_user(u) for u in extra.get("users", [])]
    out = merge(base_document("ignition.json"), {
        "ignition": {"version": spec},
        "passwd": {"users": users},
        "storage": {"files": files},
        "systemd": {"units": units},
    })
    return merge(out, native)


def _file(path: str, content: str, permissions: str) -> dict:
    return {"path": path, "mode": int(permissions, 8), "overwrite": True,
            "contents": {"source": data_url(content)}}


def _user(user: dict) -> dict:
    out: dict = {"name": user["name"], "sshAuthorizedKeys": list(user["ssh_authorized_keys"])}
    groups = list(user["groups"]) + (["sudo"] if user["sudo"] else [])
    if groups:
        out["groups"] = groups
    if user["shell"]:
        out["shell"] = user["shell"]
    return out

"""The three cloud-config dialects: cloud-init's (refos, Fedora Atomic, Photon,
Ubuntu Core), coreos-cloudinit's (CoreOS, Flatcar's config-2 route) and
RancherOS's. Each maps the generic vocabulary to its own keys as data, and
refuses what its reader has no key for."""

import json

from harness.seed.base import (
    Intent,
    SeedError,
    base_document,
    check_native,
    host_key_files,
    merge,
    refuse,
    seed_file,
)

SUDO = "ALL=(ALL) NOPASSWD:ALL"
RUNCMD_SCRIPT = "/etc/harness/runcmd"
RUNCMD_UNIT = "harness-runcmd.service"
# Top-level keys coreos-cloudinit documents; anything else it ignores silently.
COREOS_KEYS = {"coreos", "ssh_authorized_keys", "hostname", "users", "write_files",
               "manage_etc_hosts"}
# Top-level keys of RancherOS's cloud-config that the harness may pass through.
RANCHER_KEYS = {"rancher", "ssh_authorized_keys", "hostname", "write_files", "runcmd",
                "mounts"}


def document(config: dict) -> bytes:
    """`#cloud-config` then the table as JSON: JSON is YAML, so every reader parses
    it as data, and nothing is ever pieced together as text."""
    return b"#cloud-config\n" + json.dumps(config, indent=2).encode() + b"\n"


def _host_key_files(intent: Intent) -> list[dict]:
    """The guest's host keys as plain files, for readers without cloud-init's ssh_keys."""
    return [{"path": path, "content": content, "permissions": mode}
            for path, content, mode in host_key_files(intent)]


# -- cloud-init ----------------------------------------------------------------


def cloud_init(intent: Intent, base: str = "cloud-config.json") -> dict:
    """cloud-init's cloud-config: users, write_files, runcmd map one to one; a
    unit becomes a file in /etc/systemd/system plus `systemctl enable --now`. `base`
    names the base document in seeds/."""
    extra = intent.extra
    refuse(extra, ("ignition", "rancher"), "cloud-init", "it reads cloud-config only")
    config = merge(base_document(base), {
        "hostname": intent.hostname,
        "users": [_ci_user({"name": intent.user, "sudo": True, "shell": "/bin/bash",
                            "groups": [], "ssh_authorized_keys": list(intent.authorized_keys)})],
    })
    if keys := intent.host_keys():
        config["ssh_keys"] = {f"{k.kind}_{part}": value for k in keys
                              for part, value in (("private", k.private_pem),
                                                  ("public", k.public))}
    units = extra.get("units", [])
    config = merge(config, {
        "users": [_ci_user(u) for u in extra.get("users", [])],
        "write_files": _private_files(intent) + [dict(f) for f in extra.get("write_files", [])]
        + [{"path": f"/etc/systemd/system/{u['name']}", "content": u["content"],
            "permissions": "0644"} for u in units],
        "runcmd": _private_commands(intent) + _unit_commands(units)
        + list(extra.get("runcmd", [])),
    })
    config = {k: v for k, v in config.items() if v != []}
    return merge(config, extra.get("cloud_config", {}))


def _private_files(intent: Intent) -> list[dict]:
    """The private interface's systemd-networkd file, as a write_files entry."""
    if intent.private is None:
        return []
    path, content, mode = intent.private.networkd_file()
    return [{"path": path, "content": content, "permissions": mode}]


def _private_commands(intent: Intent) -> list[str]:
    """cloud-init writes files after systemd-networkd started (its init stage runs
    after the network is up), so networkd is told to read them again, first thing in
    runcmd: before any unit of the extra configuration starts (an etcd that binds
    the private address). `networkctl reload` reconfigures every link a new or
    changed .network file matches (networkctl(1), systemd 252)."""
    return ["networkctl reload"] if intent.private is not None else []


def _ci_user(user: dict) -> dict:
    out: dict = {"name": user["name"], "lock_passwd": True}
    if user["ssh_authorized_keys"]:  # cloud-init's schema wants at least one
        out["ssh_authorized_keys"] = list(user["ssh_authorized_keys"])
    if user["groups"]:
        out["groups"] = list(user["groups"])
    if user["sudo"]:
        out["sudo"] = SUDO
    if user["shell"]:
        out["shell"] = user["shell"]
    return out


def _unit_commands(units: list[dict]) -> list[str]:
    if not units:
        return []
    enabled = " ".join(u["name"] for u in units if u["enabled"])
    return ["systemctl daemon-reload"] + ([f"systemctl enable --now {enabled}"] if enabled else [])


def nocloud_meta(intent: Intent) -> bytes:
    return json.dumps({"instance-id": intent.instance_id,
                       "local-hostname": intent.hostname}).encode() + b"\n"


def openstack_meta(intent: Intent) -> bytes:
    """meta_data.json of a config drive: cloud-init requires `uuid`; cloud-init,
    coreos-cloudinit and RancherOS all read `hostname` and `public_keys`."""
    meta = merge(base_document("openstack-meta-data.json"), {
        "uuid": intent.instance_id, "hostname": intent.hostname, "name": intent.hostname,
        "public_keys": {f"harness-{i}": k for i, k in enumerate(intent.authorized_keys)},
    })
    return json.dumps(meta, indent=2).encode() + b"\n"


# -- coreos-cloudinit ----------------------------------------------------------


def coreos_cloudinit(intent: Intent) -> dict:
    """coreos-cloudinit's cloud-config: units go to `coreos.units`; it has no
    runcmd, so commands run from a oneshot unit, once per machine."""
    extra = intent.extra
    refuse(extra, ("ignition", "rancher"), "coreos-cloudinit", "it reads cloud-config only")
    native = extra.get("cloud_config", {})
    check_native(native, COREOS_KEYS, "extra.cloud_config", "coreos-cloudinit")
    files = _host_key_files(intent) + _private_files(intent) + \
        [dict(f) for f in extra.get("write_files", [])]
    units = [{"name": u["name"], "content": u["content"], "enable": u["enabled"],
              **({"command": "start"} if u["enabled"] else {})}
             for u in extra.get("units", [])]
    if commands := _private_commands(intent) + list(extra.get("runcmd", [])):
        files.append(runcmd_script(commands))
        units.append({"name": RUNCMD_UNIT, "content": runcmd_unit(), "enable": True,
                      "command": "start"})
    config = merge(base_document("coreos-cloudinit.json"), {
        "hostname": intent.hostname,
        "write_files": files,
        "coreos": {"units": units},
        "users": [_coreos_user(u) for u in extra.get("users", [])],
    })
    if intent.user == "core":  # top-level keys go to the built-in core user
        config["ssh_authorized_keys"] = list(intent.authorized_keys)
    else:
        config["users"].insert(0, _coreos_user({
            "name": intent.user, "groups": [], "sudo": True, "shell": "",
            "ssh_authorized_keys": list(intent.authorized_keys)}))
    config = {k: v for k, v in config.items() if v != []}
    return merge(config, native)


def _coreos_user(user: dict) -> dict:
    groups = list(user["groups"]) + (["sudo"] if user["sudo"] else [])
    out: dict = {"name": user["name"]}
    if user["ssh_authorized_keys"]:
        out["ssh_authorized_keys"] = list(user["ssh_authorized_keys"])
    if groups:
        out["groups"] = groups
    if user["shell"]:
        out["shell"] = user["shell"]
    return out


def runcmd_script(commands: list[str]) -> dict:
    """runcmd's commands as one shell script that stops at the first failure."""
    body = "#!/bin/sh\nset -e\n" + "".join(f"{c}\n" for c in commands)
    return {"path": RUNCMD_SCRIPT, "content": body, "permissions": "0755"}


def runcmd_unit() -> str:
    """The oneshot unit that runs runcmd's script once: seeds/harness-runcmd.service."""
    return seed_file(RUNCMD_UNIT)


# -- RancherOS -----------------------------------------------------------------


def rancher(intent: Intent) -> dict:
    """RancherOS's cloud-config: `ssh_authorized_keys` for its own user, `rancher:`
    for the OS. It runs no systemd and creates no users, so those are refused."""
    extra = intent.extra
    if intent.private is not None:
        raise SeedError("private: RancherOS has no systemd-networkd to give the private "
                        "interface's file to (its network is rancher.network)")
    refuse(extra, ("users",), "RancherOS", "its cloud-config creates no users; "
           "ssh_authorized_keys go to the built-in user")
    refuse(extra, ("units",), "RancherOS", "there is no systemd; "
           "system services are containers under rancher.services")
    refuse(extra, ("ignition",), "RancherOS", "it reads cloud-config only")
    native = extra.get("cloud_config", {})
    check_native(native, RANCHER_KEYS, "extra.cloud_config", "RancherOS")
    config = merge(base_document("rancheros-cloud-config.json"), {
        "hostname": intent.hostname,
        "ssh_authorized_keys": list(intent.authorized_keys),
        "write_files": [dict(f, owner="root") for f in extra.get("write_files", [])],
        "runcmd": list(extra.get("runcmd", [])),
        "rancher": extra.get("rancher", {}),
    })
    config = {k: v for k, v in config.items() if v not in ([], {})}
    return merge(config, native)


def rancher_cmdline(config: dict) -> str:
    """The `rancher:` table as kernel arguments (`rancher.a.b=v`, lists as `[x,y]`),
    which RancherOS merges into its configuration at boot."""
    args = []
    for path, value in _leaves(config.get("rancher", {}), "rancher"):
        if isinstance(value, list):
            value = "[" + ",".join(str(v) for v in value) + "]"
        elif isinstance(value, bool):
            value = str(value).lower()
        text = str(value)
        if not text or any(c.isspace() or c == '"' for c in text):
            raise SeedError(f"extra.{path}: {text!r:.40} cannot be a kernel argument "
                            "(empty, or has spaces or '\"'); use the config-2 route")
        args.append(f"{path}={text}")
    return " ".join(args)


def _leaves(table: dict, prefix: str):
    for key, value in table.items():
        path = f"{prefix}.{key}"
        if isinstance(value, dict):
            yield from _leaves(value, path)
        elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            raise SeedError(f"extra.{path}: a list of tables cannot be a kernel argument; "
                            "use the config-2 route")
        else:
            yield path, value

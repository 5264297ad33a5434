"""First-boot configurations for cluster members, in the distro's own format.

A cluster fixture calls one of these with a member's plan (its name, private
address and peers) and seeds the member with the result, as the `extra` a seed
writer takes (harness.seed.base): `cloud_config` for cloud-init (refos), `ignition`
for Ignition (refos-ignition). The settings are data (`etcd_environment`); the
formats are small functions over them. docs/cluster.md says why each is so.
"""

import hashlib
from collections.abc import Callable, Iterable
from typing import Protocol

from harness.seed.base import SeedError, seed_file
from harness.vm import timeouts

PEER_PORT = 2380
CLIENT_PORT = 2379
# etcd's own defaults, the values for a fast LAN (https://etcd.io/docs/v3.4/tuning/,
# "Time parameters"): the heartbeat near the members' round trip, the election
# timeout at least ten round trips. A user on slow machines raises both by the same
# factor; here that factor is the harness's for the accelerator (harness.vm.timeouts).
HEARTBEAT_MS = 100
ELECTION_MS = 1000
ELECTION_MAX_MS = 50000  # the guide's upper limit; etcd refuses more
# Debian's etcd.service reads /etc/default/etcd (EnvironmentFile=-/etc/default/%p) and
# keeps its data in /var/lib/etcd/default (etcd-server 3.4.23-4, debian/etcd-server.service).
DEBIAN_ENV_FILE = "/etc/default/etcd"
DEBIAN_DATA_DIR = "/var/lib/etcd/default"
DEBIAN_DROPIN = "/etc/systemd/system/etcd.service.d/20-harness-cluster.conf"
# Container Linux's: etcd-member.service, configured by a drop-in that the Container
# Linux Config transpiler named 20-clct-etcd-member.conf (seen in configs that users
# published; the transpiler's source was not read here: unverified).
MEMBER_UNIT = "etcd-member.service"
MEMBER_DROPIN = "20-clct-etcd-member.conf"
COREOS_DATA_DIR = "/var/lib/etcd"


class MemberPlan(Protocol):
    """What the cluster fixture tells a member's config about the cluster."""

    index: int
    name: str
    hostname: str
    private_address: str
    peers: Iterable[tuple[str, str]]


def tuning() -> tuple[int, int]:
    """(heartbeat, election timeout) in ms, etcd's defaults scaled as the harness
    scales its own waits (TCG is about five times slower than KVM)."""
    factor = timeouts.scale()
    heartbeat = round(HEARTBEAT_MS * factor)
    return heartbeat, min(round(ELECTION_MS * factor), ELECTION_MAX_MS)


def start_timeout() -> int:
    """Seconds a member's etcd may wait for quorum when started by the boot: as long
    as the harness waits for another member's boot to finish. etcd tells systemd it
    is ready (Type=notify) only once it has published itself through a quorum."""
    return round(timeouts.get("boot") + timeouts.get("ready"))


def members(plan: MemberPlan) -> list[tuple[str, str]]:
    """Every member, this one included, as (name, address), sorted by name."""
    found = dict(plan.peers)
    found[plan.name] = plan.private_address
    return sorted(found.items())


def cluster_token(plan: MemberPlan) -> str:
    """The same for every member of one cluster, different for a different member
    list; deterministic, so a member's config (part of its save's key) is too."""
    text = ",".join(f"{n}={a}" for n, a in members(plan))
    return "harness-etcd-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _url(address: str, port: int) -> str:
    return f"http://{address}:{port}"


def etcd_environment(plan: MemberPlan, data_dir: str) -> dict[str, str]:
    """etcd's settings for this member as its ETCD_* environment (etcd reads every
    flag from ETCD_<FLAG>): peers on the private address, clients there and on
    127.0.0.1 (etcdctl's default endpoint)."""
    address = plan.private_address
    heartbeat, election = tuning()
    return {
        "ETCD_NAME": plan.name,
        "ETCD_DATA_DIR": data_dir,
        "ETCD_INITIAL_CLUSTER": ",".join(f"{n}={_url(a, PEER_PORT)}" for n, a in members(plan)),
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": cluster_token(plan),
        "ETCD_LISTEN_PEER_URLS": _url(address, PEER_PORT),
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": _url(address, PEER_PORT),
        "ETCD_LISTEN_CLIENT_URLS": f"{_url(address, CLIENT_PORT)},{_url('127.0.0.1', CLIENT_PORT)}",
        "ETCD_ADVERTISE_CLIENT_URLS": _url(address, CLIENT_PORT),
        "ETCD_HEARTBEAT_INTERVAL": str(heartbeat),
        "ETCD_ELECTION_TIMEOUT": str(election),
    }


def _env_file(env: dict[str, str]) -> str:
    """/etc/default/etcd: KEY=value lines, as systemd's EnvironmentFile= reads them."""
    return "".join(f"{k}={_plain(v)}\n" for k, v in env.items())


def _environment_lines(env: dict[str, str]) -> str:
    return "".join(f'Environment="{k}={_plain(v)}"\n' for k, v in env.items())


def _plain(value: str) -> str:
    """Values here are names, addresses and numbers; anything a systemd or shell
    quoting rule would touch is refused rather than escaped."""
    if any(c in value for c in "\"'\\$%\n ;#"):
        raise SeedError(f"etcd setting {value!r}: has a character that needs quoting")
    return value


# -- refos: cloud-init ---------------------------------------------------------


def refos_dropin() -> str:
    """Debian's etcd.service as a cluster member needs it: the private address must
    be up before etcd binds it (Debian orders it after network.target only), a
    failed bind is retried (Debian restarts only on signals and timeouts), and the
    start may wait for quorum as long as a peer's boot may take."""
    return ("[Unit]\nAfter=network-online.target\nWants=network-online.target\n\n"
            f"[Service]\nRestart=on-failure\nRestartSec=5s\nTimeoutStartSec={start_timeout()}\n")


def etcd_cloud_config(plan: MemberPlan) -> dict:
    """cloud-config for a refos member: Debian's /etc/default/etcd and a drop-in, then
    Debian's etcd.service unmasked (the image masks it, images/refos/recipe.toml),
    enabled and started. `--no-block`: cloud-init finishes; the boot still waits for
    the queued start, so a member's boot finishes once etcd has quorum."""
    env = etcd_environment(plan, DEBIAN_DATA_DIR)
    return {"cloud_config": {
        "write_files": [
            {"path": DEBIAN_ENV_FILE, "content": _env_file(env), "permissions": "0644"},
            {"path": DEBIAN_DROPIN, "content": refos_dropin(), "permissions": "0644"},
        ],
        "runcmd": [
            "systemctl unmask etcd.service",
            "systemctl enable etcd.service",
            "systemctl start --no-block etcd.service",
        ],
    }}


# -- refos-ignition: Ignition ----------------------------------------------------


def member_unit() -> str:
    """seeds/cluster/etcd-member.service: Container Linux's unit, running Debian's etcd."""
    return seed_file("cluster/etcd-member.service")


def member_dropin(plan: MemberPlan) -> str:
    """The member's settings as Container Linux Config's `etcd:` section became them:
    Environment= lines in a drop-in of etcd-member.service."""
    return "[Service]\n" + _environment_lines(etcd_environment(plan, COREOS_DATA_DIR))


def etcd_ignition(plan: MemberPlan) -> dict:
    """Ignition config for a refos-ignition member: etcd-member.service and its
    drop-in, enabled (Ignition writes a preset that the first boot applies)."""
    return {"ignition": {"systemd": {"units": [{
        "name": MEMBER_UNIT, "enabled": True, "contents": member_unit(),
        "dropins": [{"name": MEMBER_DROPIN, "contents": member_dropin(plan)}],
    }]}}}


# Seed format (catalog boot.seed) -> the etcd member config in that format.
ETCD_BY_SEED: dict[str, Callable[[MemberPlan], dict]] = {
    "nocloud": etcd_cloud_config,
    "ignition": etcd_ignition,
}


def etcd_member(seed: str) -> Callable[[MemberPlan], dict]:
    """The etcd member config writer for a distro's seed format."""
    if seed not in ETCD_BY_SEED:
        raise SeedError(f"no etcd member configuration is written for seed format {seed!r}; "
                        f"known: {', '.join(ETCD_BY_SEED)}")
    return ETCD_BY_SEED[seed]

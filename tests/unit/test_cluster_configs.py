"""etcd member configs, read back by the real readers of their formats: cloud-init's
NoCloud datasource and schema, ignition-validate, and systemd-analyze for the units.
The guests' own check (etcd running, a cluster formed) is tests/suites/cluster."""

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import cluster_configs as cc
from harness import seed
from harness.seed import keys
from harness.vm import timeouts
from tests.helpers import run_pytest
from tests.unit.test_seed import (
    cloud_init_read,
    ignition_validate,
    needs_cloud_init,
    needs_ignition,
)

PEERS = (("m0", "10.87.0.11"), ("m1", "10.87.0.12"), ("m2", "10.87.0.13"))


@dataclass(frozen=True)
class Plan:
    """Stands in for the cluster fixture's member plan (cc.MemberPlan): the same fields."""

    index: int
    name: str
    hostname: str
    private_address: str
    peers: tuple[tuple[str, str], ...]


def plan(i: int, peers=PEERS) -> Plan:
    name, address = peers[i]
    return Plan(i, name, f"cluster-{name}", address, tuple(p for p in peers if p[0] != name))


@pytest.fixture(scope="module")
def run_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return keys.generate(d, "id_ed25519", "harness-test"), keys.generate(d, "host", "guest")


def intent(run_keys, user: str, extra: dict, hostname: str) -> seed.Intent:
    client, host = run_keys
    return seed.Intent(hostname=hostname, user=user, authorized_keys=(client.public,),
                       host_key=host, instance_id=f"iid-{hostname}", extra=extra)


def test_every_member_lists_the_same_cluster_and_token_and_its_own_urls():
    envs = [cc.etcd_environment(plan(i), cc.DEBIAN_DATA_DIR) for i in range(3)]
    assert {e["ETCD_INITIAL_CLUSTER"] for e in envs} == {
        "m0=http://10.87.0.11:2380,m1=http://10.87.0.12:2380,m2=http://10.87.0.13:2380"}
    assert len({e["ETCD_INITIAL_CLUSTER_TOKEN"] for e in envs}) == 1
    assert [e["ETCD_NAME"] for e in envs] == ["m0", "m1", "m2"]
    assert envs[1]["ETCD_LISTEN_PEER_URLS"] == "http://10.87.0.12:2380"
    assert envs[1]["ETCD_LISTEN_CLIENT_URLS"] == "http://10.87.0.12:2379,http://127.0.0.1:2379"


def test_another_member_list_gets_another_token():
    other = (("m0", "10.87.0.11"), ("m1", "10.87.0.12"))
    assert cc.cluster_token(plan(0)) != cc.cluster_token(plan(0, other))


def test_etcd_timing_is_etcds_default_scaled_by_the_accelerator(monkeypatch):
    monkeypatch.setattr(timeouts, "_accel", "kvm")
    assert cc.tuning() == (100, 1000)
    monkeypatch.setattr(timeouts, "_accel", "tcg")
    heartbeat, election = cc.tuning()
    assert (heartbeat, election) == (100 * timeouts.TCG_FACTOR, 1000 * timeouts.TCG_FACTOR)
    env = cc.etcd_environment(plan(0), cc.DEBIAN_DATA_DIR)
    assert (env["ETCD_HEARTBEAT_INTERVAL"], env["ETCD_ELECTION_TIMEOUT"]) == ("500", "5000")


def test_election_timeout_stays_within_etcds_limit(monkeypatch):
    monkeypatch.setenv("HARNESS_TIMEOUT_SCALE", "100")
    monkeypatch.setattr(timeouts, "_accel", "tcg")
    assert cc.tuning()[1] == cc.ELECTION_MAX_MS


def test_a_value_that_would_need_quoting_is_refused():
    bad = Plan(0, "m0 x", "h", "10.87.0.11", ())
    with pytest.raises(seed.SeedError, match="needs quoting"):
        cc.etcd_cloud_config(bad)


def test_an_unknown_seed_format_is_refused_by_name():
    with pytest.raises(seed.SeedError, match="'config-2'"):
        cc.etcd_member("config-2")


@needs_cloud_init
def test_refos_member_config_is_read_by_cloud_init_and_passes_its_schema(run_keys, tmp_path):
    extra = cc.etcd_member("nocloud")(plan(1))
    media = seed.build("nocloud", intent(run_keys, "refos", extra, "cluster-m1"), tmp_path / "m")
    got = cloud_init_read("nocloud", media.disk, tmp_path / "r")
    assert got["found"] and got["schema_error"] == "", got
    assert b"ETCD_INITIAL_CLUSTER=" in media.files["user-data"]


def test_refos_member_config_writes_debians_env_file_and_starts_debians_unit():
    config = cc.etcd_cloud_config(plan(2))["cloud_config"]
    files = {f["path"]: f["content"] for f in config["write_files"]}
    assert "ETCD_NAME=m2\n" in files["/etc/default/etcd"]
    assert "ETCD_INITIAL_CLUSTER_STATE=new\n" in files["/etc/default/etcd"]
    assert config["runcmd"][0] == "systemctl unmask etcd.service"  # masked in the image


@needs_ignition
def test_refos_ignition_member_config_passes_ignition_validate(run_keys, tmp_path):
    extra = cc.etcd_member("ignition")(plan(0))
    media = seed.build("ignition", intent(run_keys, "core", extra, "cluster-m0"), tmp_path / "m",
                       {"fw_cfg": "opt/com.coreos/config", "ignition_spec": "3.3.0"})
    (tmp_path / "config.ign").write_bytes(media.files["config.ign"])
    ignition_validate(tmp_path / "config.ign")
    units = json.loads(media.files["config.ign"])["systemd"]["units"]
    (unit,) = [u for u in units if u["name"] == cc.MEMBER_UNIT]
    assert unit["enabled"] and unit["dropins"][0]["name"] == cc.MEMBER_DROPIN


def _verify_in_root(root: Path, unit: str, content: str, dropins: dict[str, str]) -> str:
    """systemd-analyze verify against `root`: systemd's own units copied in, the unit
    and its drop-ins under /etc, and a stand-in /usr/bin/etcd (the host has no etcd;
    verify only checks that ExecStart's file is executable)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (Debian package systemd) is not installed")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    etcd = root / "usr/bin/etcd"
    etcd.parent.mkdir(parents=True)
    etcd.write_text("#!/bin/sh\n")
    etcd.chmod(0o755)
    units = root / "etc/systemd/system"
    (units / f"{unit}.d").mkdir(parents=True)
    (units / unit).write_text(content)
    for name, text in dropins.items():
        (units / f"{unit}.d" / name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", f"--root={root}", unit],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    return out.stdout


def test_etcd_member_unit_and_its_dropin_are_taken_by_systemd(tmp_path):
    _verify_in_root(tmp_path, cc.MEMBER_UNIT, cc.member_unit(),
                    {cc.MEMBER_DROPIN: cc.member_dropin(plan(0))})


def test_refos_dropin_is_taken_by_systemd_over_a_debian_like_unit(tmp_path):
    # Debian's etcd.service's own lines that matter here (etcd-server 3.4.23-4); the
    # guest verifies the real unit (tests/suites/cluster/test_etcd.py).
    debian = ("[Unit]\nAfter=network.target\nWants=network-online.target\n\n[Service]\n"
              "EnvironmentFile=-/etc/default/%p\nType=notify\nUser=etcd\n"
              "ExecStart=/usr/bin/etcd $DAEMON_ARGS\nRestart=on-abnormal\n\n"
              "[Install]\nWantedBy=multi-user.target\n")
    _verify_in_root(tmp_path, "etcd.service", debian,
                    {Path(cc.DEBIAN_DROPIN).name: cc.refos_dropin()})


@pytest.mark.parametrize("distro", ["refos", "refos-ignition"])
def test_fleet_test_is_skipped_in_the_catalogs_words_before_any_boot(distro, tmp_path):
    result = run_pytest("tests/suites/cluster/test_fleet.py", f"--distro={distro}", "--offline",
                        "-rs", f"--artifacts={tmp_path}")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout
    assert "CoreOS removed it from Container Linux in 2018" in result.stdout
    assert "coreos-overlay#3025" in result.stdout
    assert "kernel on the console" not in result.stdout + result.stderr  # nothing booted


def test_etcd_suites_run_only_where_an_etcd_member_is_promised():
    from harness import catalog
    from harness.plugin.promises import unmet

    known = catalog.load()
    assert unmet(["etcd"], known["refos"]) is None
    assert unmet(["etcd"], known["refos-ignition"]) is None
    assert "no cluster has been run" in unmet(["etcd"], known["refos-ostree"])
    assert unmet(["etcd"], known["flatcar"]) == "flatcar: no etcd cluster member promised"

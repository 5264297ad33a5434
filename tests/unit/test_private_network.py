"""A cluster member's private interface in its seed, read back by the format's own
reader (cloud-init's datasource and schema, ignition-validate), and what a
cluster is refused for before anything boots."""

import base64
import json
import textwrap
from pathlib import Path

import pytest

from harness import catalog, seed
from harness.seed import keys
from harness.vm import cluster, network
from harness.vm.machine import MachineSpec
from tests.helpers import run_pytest
from tests.unit.test_seed import (
    cloud_init_read,
    ignition_validate,
    needs_cloud_init,
    needs_ignition,
)

PRIVATE = seed.PrivateInterface(network.member_mac(1), network.member_interface(1))
EXPECTED = ("[Match]\nMACAddress=52:54:00:87:00:0c\n\n[Network]\nAddress=10.87.0.12/24\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")


@pytest.fixture(scope="module")
def run_keys(tmp_path_factory) -> tuple[keys.KeyPair, keys.KeyPair]:
    d = tmp_path_factory.mktemp("keys")
    return keys.generate(d, "id_ed25519", "harness-test"), keys.generate(d, "host", "m1")


def member_intent(run_keys, extra=None, user="refos") -> seed.Intent:
    client, host = run_keys
    return seed.Intent(hostname="m1", user=user, authorized_keys=(client.public,),
                       host_key=host, instance_id="iid-m1", extra=extra or {},
                       private=PRIVATE)


def test_member_addresses_and_macs_follow_the_index():
    assert [network.member_address(i) for i in range(3)] == \
        ["10.87.0.11", "10.87.0.12", "10.87.0.13"]
    assert network.member_mac(2) == "52:54:00:87:00:0d"
    assert network.member_interface(0) == "10.87.0.11/24"
    with pytest.raises(network.NetworkError, match="member index 64"):
        network.member_mac(64)


def test_each_plan_names_its_peers_and_not_itself():
    plans = cluster.plans(3)
    assert [(p.name, p.hostname, p.private_address) for p in plans] == [
        ("m0", "m0", "10.87.0.11"), ("m1", "m1", "10.87.0.12"), ("m2", "m2", "10.87.0.13")]
    assert plans[1].peers == (("m0", "10.87.0.11"), ("m2", "10.87.0.13"))
    assert plans[2].members == (("m0", "10.87.0.11"), ("m1", "10.87.0.12"),
                                ("m2", "10.87.0.13"))


def test_the_networkd_file_matches_the_mac_and_sorts_before_the_images_catch_all():
    path, content, mode = PRIVATE.networkd_file()
    assert content.endswith(EXPECTED) and mode == "0644"
    # refos's own file (DHCP on en*) is 20-wired.network: networkd takes the first match.
    assert Path(path).name < "20-wired.network"
    assert (Path(__file__).parents[2] / "images/refos/overlay/etc/systemd/network/"
            "20-wired.network").is_file()


@needs_cloud_init
@pytest.mark.parametrize("fmt", ["nocloud", "config-2"])
def test_cloud_init_writes_the_file_and_reloads_networkd_before_any_unit(fmt, run_keys,
                                                                         tmp_path):
    unit = {"name": "etcd.service", "content": "[Service]\nExecStart=/bin/true\n"}
    media = seed.build(fmt, member_intent(run_keys, {"units": [unit]}), tmp_path)
    got = cloud_init_read(fmt, media.disk, tmp_path)
    assert got["schema_error"] == ""
    config = got["config"]
    (written,) = [f for f in config["write_files"]
                  if f["path"] == "/etc/systemd/network/10-harness-private.network"]
    assert written["content"].endswith(EXPECTED)
    assert config["runcmd"][0] == "networkctl reload"
    assert config["runcmd"][1:] == ["systemctl daemon-reload", "systemctl enable --now "
                                    "etcd.service"]


@needs_ignition
def test_ignition_writes_the_file_before_networkd_starts(run_keys, tmp_path):
    media = seed.build("ignition", member_intent(run_keys, user="core"), tmp_path)
    ((_, path),) = media.fw_cfg
    assert "warning" not in ignition_validate(path)
    files = {f["path"]: f for f in json.loads(path.read_text())["storage"]["files"]}
    source = files["/etc/systemd/network/10-harness-private.network"]["contents"]["source"]
    assert base64.b64decode(source.split(",", 1)[1]).decode().endswith(EXPECTED)
    assert "harness-runcmd.service" not in path.read_text()  # no reload needed


def test_coreos_cloudinit_reloads_from_its_runcmd_unit(run_keys, tmp_path):
    config = seed.cloudconfig.coreos_cloudinit(member_intent(run_keys, user="core"))
    script = [f for f in config["write_files"] if f["path"] == seed.cloudconfig.RUNCMD_SCRIPT]
    assert "networkctl reload" in script[0]["content"]


@pytest.mark.parametrize("fmt", ["rancher", "none"])
def test_formats_without_networkd_or_media_refuse_a_private_interface(fmt, run_keys,
                                                                      tmp_path):
    with pytest.raises(seed.SeedError, match=r"^private: "):
        seed.build(fmt, member_intent(run_keys, user="rancher"), tmp_path)


@pytest.mark.parametrize("mac, address, field", [
    ("52:54:00:87:00:0C", "10.87.0.12/24", "mac"),
    ("52:54:00:87:00:0c\n", "10.87.0.12/24", "mac"),
    ("52:54:00:87:00:0c", "10.87.0.12", "address"),
    ("52:54:00:87:00:0c", "10.87.0.12/24\nDNS=1.1.1.1", "address"),
    ("52:54:00:87:00:0c", "fe80::1/64", "address"),
])
def test_a_private_interface_that_is_not_one_is_refused(mac, address, field):
    with pytest.raises(seed.SeedError, match=rf"^private\.{field}: "):
        seed.PrivateInterface(mac, address)


CATALOG = catalog.load()


def _spec(name: str) -> MachineSpec:
    return MachineSpec(CATALOG[name], None)  # type: ignore[arg-type] - no image needed


def test_a_cluster_that_fits_is_not_refused():
    need = 3 * (1024 + 256 + 64)
    assert cluster.refusal(_spec("refos"), 3, False, need, "tcg") is None


def test_a_cluster_larger_than_the_memory_budget_is_refused_with_the_sums():
    why = cluster.refusal(_spec("refos"), 3, False, 3 * 1344 - 1, "auto")
    assert why and "needs 4032 MiB (3 x 1344 MiB" in why and "4031 MiB available" in why


def test_a_cluster_on_a_remote_hypervisor_is_refused():
    assert "local hypervisor only" in cluster.refusal(_spec("refos"), 3, True, None, "tcg")


def test_a_distro_whose_seed_cannot_carry_member_config_is_refused():
    names = [n for n, d in CATALOG.items() if d.boot.seed in ("rancher", "none")]
    assert names
    for name in names:
        assert "cannot carry" in cluster.refusal(_spec(name), 2, False, None, "tcg")


# -- the pytest interface: refused before any boot ------------------------------------

def _pytest(tmp_path: Path, body: str, *args: str, env: dict | None = None):
    test = tmp_path / "test_probe.py"
    test.write_text(textwrap.dedent(body))
    return run_pytest("-rs", "--rootdir", str(tmp_path), str(test), *args, cwd=tmp_path,
                      env=env)


CLUSTER_TEST = """
    import pytest

    pytestmark = pytest.mark.cluster(size=2, config=lambda plan: {})

    def test_uses_a_cluster(cluster):
        raise AssertionError("booted")
"""


def test_a_distro_without_per_member_seeds_skips_before_any_boot(tmp_path, cache):
    result = _pytest(tmp_path, CLUSTER_TEST, "--offline", "--distro=rancheros")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "SKIPPED" in result.stdout and "cannot carry a member's private interface" \
        in result.stdout
    assert "not cached" not in result.stdout  # no fixture ran: nothing was resolved


def test_a_remote_hypervisor_skips_a_cluster_before_connecting(tmp_path, cache):
    result = _pytest(tmp_path, CLUSTER_TEST, "--offline", "--distro=refos",
                     "--libvirt-uri=qemu+ssh://nobody@192.0.2.1/system")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "local hypervisor only" in result.stdout


def test_a_cluster_that_does_not_fit_in_memory_skips_with_the_sums(tmp_path, cache):
    result = _pytest(tmp_path, CLUSTER_TEST.replace("size=2", "size=64"), "--offline",
                     "--distro=refos")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "a cluster of 64 refos members needs 86016 MiB" in result.stdout


def test_a_cluster_marker_with_unknown_arguments_is_a_usage_error(tmp_path, cache):
    result = _pytest(tmp_path, CLUSTER_TEST.replace("size=2", "members=2"), "--offline",
                     "--distro=refos")
    assert result.returncode == 4
    assert "@pytest.mark.cluster takes size=<int>" in result.stdout + result.stderr

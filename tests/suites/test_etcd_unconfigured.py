"""etcd ships in the image but runs nowhere until a cluster member's config sets it
up: started alone, Debian's etcd.service would make a one-member cluster whose data
directory then ignores any later member configuration (images/refos/recipe.toml)."""

import pytest

from harness.cluster_configs import CLIENT_PORT, PEER_PORT

pytestmark = [pytest.mark.vm, pytest.mark.promise("etcd")]


def test_etcd_is_shipped_at_debians_version(machine, distro):
    # etcd 3.4's `--version` prints "etcd Version: 3.4.23" (Debian bookworm's etcd-server).
    assert "etcd Version: 3.4." in machine.succeed("etcd --version")
    assert "etcdctl version: 3.4." in machine.succeed("etcdctl version")


def test_etcd_is_masked_and_nothing_listens_on_its_ports_without_a_member_config(machine,
                                                                                   distro):
    assert machine.run("systemctl is-enabled etcd.service").stdout.strip() == "masked"
    assert machine.run("systemctl is-active etcd.service").stdout.strip() == "inactive"
    listening = machine.succeed("ss -ltnH")
    assert f":{CLIENT_PORT} " not in listening and f":{PEER_PORT} " not in listening, listening
    assert machine.run("test -e /var/lib/etcd/default/member").status != 0

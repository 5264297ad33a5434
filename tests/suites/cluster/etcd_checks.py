"""The etcd checks of a 3-member cluster, each member configured by its own
first-boot config in the distro's format (harness.cluster_configs). Collected by
the modules that give the config: test_etcd.py (cloud-config, Debian's
etcd.service: refos) and test_etcd_ignition.py (Ignition, Container Linux's
etcd-member.service: refos-ignition).

The tests run in file order on one cluster and take members away as they go:
agreement, replication, one member down (quorum holds), two down (writes fail
with etcd's own error), then both back (the one down longest catches up)."""

import json
import shlex

from harness import cluster_configs
from harness.vm import ssh, timeouts

# What etcd 3.4 answers when a write cannot reach a quorum: the server's own timeout
# (etcdserver: request timed out, ErrTimeout in etcdserver/errors.go), the client's
# deadline (context deadline exceeded), or, mid-election, no leader / leader changed.
NO_QUORUM = ("etcdserver: request timed out", "context deadline exceeded",
             "etcdserver: no leader", "etcdserver: leader changed")
KEY, WHILE_DOWN = "harness/written-on-m0", "harness/written-while-m2-was-down"


def _command_timeout() -> int:
    """etcdctl's own deadline: a third of the harness's for one command, so etcdctl
    answers (with its error, if any) before the SSH command is given up."""
    return max(5, round(timeouts.get("ssh_command") / 3))


def etcdctl(m, args: str) -> str:
    return m.succeed(f"etcdctl --command-timeout={_command_timeout()}s {args}")


def etcdctl_result(m, args: str) -> ssh.Result:
    return m.run(f"etcdctl --command-timeout={_command_timeout()}s {args}")


def wait_healthy(m) -> None:
    """Until the member's local endpoint answers a linearizable read (needs a quorum)."""
    m.wait_until_succeeds(f"etcdctl --command-timeout={_command_timeout()}s endpoint health",
                          timeouts.get("ready"))


def read_local(m, key: str, value: str) -> None:
    """Until the member's own copy (a serializable read, no quorum) holds `value`."""
    m.wait_until_succeeds(
        f"test \"$(etcdctl get --consistency=s --print-value-only {shlex.quote(key)})\" = "
        f"{shlex.quote(value)}", timeouts.get("unit"))


def test_each_member_runs_its_distros_etcd_unit_from_its_own_config(cluster, distro,
                                                                    guest_output):
    unit = distro.promises.etcd_unit
    for m in cluster.members:
        m.wait_for_unit(unit)
        guest_output(f"{m.name}-systemctl-cat", m.succeed(f"systemctl cat {unit}"))
        # The environment the running etcd got, from its unit, drop-in and env file.
        pid = m.succeed(f"systemctl show -p MainPID --value {unit}").strip()
        env = m.succeed(f"tr '\\0' '\\n' < /proc/{int(pid)}/environ").splitlines()
        assert f"ETCD_NAME={m.name}" in env
        peer = f"http://{cluster.address(m)}:{cluster_configs.PEER_PORT}"
        assert f"ETCD_LISTEN_PEER_URLS={peer}" in env
        # --man=no: the image has no man pages (Debian's unit names man:etcd).
        verify = m.run(f"systemd-analyze verify --man=no {unit}")
        guest_output(f"{m.name}-verify", verify.stdout + verify.stderr)
        assert verify.status == 0 and "etcd" not in verify.stderr, verify.stderr


def test_members_agree_on_membership_and_leader(cluster, guest_output):
    names = sorted(m.name for m in cluster.members)
    for m in cluster.members:
        wait_healthy(m)
    lists, leaders = set(), set()
    for m in cluster.members:
        guest_output(f"{m.name}-member-list", etcdctl(m, "member list"))
        members = json.loads(etcdctl(m, "member list -w json"))["members"]
        assert sorted(x["name"] for x in members) == names
        lists.add(tuple(sorted((x["ID"], x["name"], tuple(x["peerURLs"])) for x in members)))
        guest_output(f"{m.name}-endpoint-status",
                     etcdctl(m, "endpoint status --cluster -w table"))
        status = json.loads(etcdctl(m, "endpoint status --cluster -w json"))
        assert len(status) == len(names)
        leaders |= {s["Status"]["leader"] for s in status}
    assert len(lists) == 1, lists  # every member sees the same members
    (ids,) = [{x[0] for x in lst} for lst in lists]
    assert len(leaders) == 1 and leaders <= ids, (leaders, ids)  # and the same leader


def test_a_key_written_on_one_member_reads_back_on_the_others(cluster):
    first, *others = cluster.members
    etcdctl(first, f"put {KEY} from-{first.name}")
    for m in others:
        read_local(m, KEY, f"from-{first.name}")


def test_with_one_member_destroyed_writes_still_succeed(cluster, guest_output):
    m0, m1, m2 = cluster.members
    cluster.destroy_member(m2)
    wait_healthy(m0)  # a new leader, if m2 led
    guest_output("one-down-put", etcdctl(m0, f"put {WHILE_DOWN} while-{m2.name}-down"))
    read_local(m1, WHILE_DOWN, f"while-{m2.name}-down")
    guest_output("one-down-endpoint-status", etcdctl(m0, "endpoint status -w table"))


def test_with_two_members_destroyed_a_write_fails_with_etcds_error(cluster, guest_output):
    m0, m1, _ = cluster.members
    cluster.destroy_member(m1)
    result = etcdctl_result(m0, "put harness/no-quorum never")
    guest_output("two-down-put", f"exit {result.status}\n{result.stdout}{result.stderr}")
    assert result.status != 0
    assert any(e in result.stderr for e in NO_QUORUM), result.stderr
    # Not written: the survivor's own copy lacks it.
    assert etcdctl(m0, "get --consistency=s --print-value-only harness/no-quorum").strip() == ""


def test_a_restarted_member_catches_up_with_the_keys_written_while_it_was_down(
        cluster, guest_output):
    m0, m1, m2 = cluster.members
    cluster.start_member(m1)  # m0 and m1: a quorum again
    wait_healthy(m1)
    cluster.start_member(m2)
    wait_healthy(m2)
    read_local(m2, WHILE_DOWN, f"while-{m2.name}-down")
    read_local(m2, KEY, f"from-{m0.name}")
    guest_output("after-restart-member-list", etcdctl(m2, "member list"))
    guest_output("after-restart-endpoint-status",
                 etcdctl(m2, "endpoint status --cluster -w table"))


# The checks in the order they must run (each builds on the one before), for the
# modules that collect them: test_etcd.py, test_etcd_ignition.py.
TESTS = {name: obj for name, obj in list(globals().items()) if name.startswith("test_")}

"""Clusters (harness.vm.cluster): members on a private network of their own, each
its own machine, and a member powered off and on again. Boots two real guests
of the session's distro at once, sharing them across this module's tests."""

import re
import shlex
import subprocess
import time

import pytest

from harness.vm import network, timeouts

pytestmark = [pytest.mark.vm, pytest.mark.cluster(size=2)]


def _pair(cluster):
    a, b = cluster.members
    return a, b


def _ifname(m, index: int) -> str:
    """The guest's name for its NIC with member `index`'s private MAC."""
    link = m.succeed(f"ip -o link | grep -i {shlex.quote(network.member_mac(index))}")
    return link.split(":")[1].strip()


def test_members_have_their_private_address_on_the_second_nic(cluster):
    for i, m in enumerate(cluster.members):
        assert m.private_address == cluster.address(m) == network.member_address(i)
        addrs = m.succeed(f"ip -o -4 addr show dev {shlex.quote(_ifname(m, i))}")
        print(f"{m.name}$ ip -o -4 addr show dev {_ifname(m, i)}\n{addrs}")  # evidence (-rP)
        assert f"inet {m.private_address}/24" in addrs, addrs


def test_members_reach_each_other_by_ping_and_tcp(cluster):
    a, b = _pair(cluster)
    for m, peer in ((a, b), (b, a)):
        out = m.succeed(f"busybox ping -c 2 -W 5 {peer.private_address}")
        print(f"{m.name}$ busybox ping -c 2 -W 5 {peer.private_address}\n{out}")
    # A TCP server on b; a reaches it at b's private address, which only the private
    # NIC's route leads to. refos's busybox nc (1.35, Debian) has no -s to bind one.
    b.succeed(f"systemd-run --unit=cluster-nc-listen sh -c 'echo hello-from-{b.name} | "
              f"busybox nc -l -p 7070'")
    b.wait_until_succeeds("ss -ltn | grep -q ':7070 '")
    route = a.succeed(f"ip -o route get {b.private_address}")
    assert f"dev {_ifname(a, 0)} " in route, route
    got = a.succeed(f"timeout 30 busybox nc -w 10 {b.private_address} 7070 </dev/null")
    assert got.strip() == f"hello-from-{b.name}"


def test_each_member_is_its_own_machine(cluster):
    probes = {
        "machine-id": "cat /etc/machine-id",
        "hostname": "hostname",
        "ssh host key": "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub",
        "docker engine id": "docker info --format '{{.ID}}'",
    }
    for what, cmd in probes.items():
        seen = {m.name: m.succeed(cmd).strip() for m in cluster.members}
        print(f"{what}: {seen}")
        assert all(seen.values()), f"{what}: empty on some member: {seen}"
        assert len(set(seen.values())) == len(seen), f"{what} shared by members: {seen}"
    assert [m.succeed("hostname").strip() for m in cluster.members] == \
        [m.name for m in cluster.members]


def test_the_host_has_no_address_or_link_on_the_private_network(cluster):
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True,
                           check=True).stdout
    assert "10.87.0." not in addrs, addrs
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=True).stdout
    assert not re.search(r"^\d+: (tap|vnet|vde)", links, re.M), links
    # What the host has of the network: the switch's unix sockets, one per member plus
    # its control socket.
    sockets = sorted(p.name for p in cluster.switch.dir.iterdir() if p.is_socket())
    assert "ctl" in sockets and len(sockets) >= 1 + len(cluster.members), sockets


def _console_shows(m, text: str) -> None:
    """Wait until `text`, written to the guest's serial port, is in its console log."""
    deadline = time.monotonic() + timeouts.get("ssh_command")
    while text not in m.console_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert text in m.console_text()


def test_a_destroyed_member_is_gone_from_the_network_and_comes_back_on_its_disks(cluster):
    a, b = _pair(cluster)
    b.succeed("echo kept > /var/lib/cluster-marker && sync")
    # A line of this boot in the console log (a restored member has printed nothing).
    b.succeed("echo harness-before-power-off >/dev/ttyS0")
    _console_shows(b, "harness-before-power-off")
    before = b.boot_id()
    cluster.destroy_member(b)
    assert not b.running()
    a.fail(f"busybox ping -c 2 -W 3 {b.private_address}")
    cluster.start_member(b)
    assert b.boot_id() != before  # a new boot, not a restore
    assert b.succeed("cat /var/lib/cluster-marker").strip() == "kept"  # the same disks
    console = b.console_text()  # one log, appended to: the new boot after the old
    assert "harness-before-power-off" in console
    assert "Linux version" in console[console.index("harness-before-power-off"):]
    a.succeed(f"busybox ping -c 2 -W 5 {b.private_address}")
    assert any(k.startswith("power_on") for k in b.timings)

"""Which libvirt URIs name a remote hypervisor, and the SSH hop read from them
(libvirt's URI syntax: https://libvirt.org/uri.html; transport parameters:
https://libvirt.org/remote.html)."""

import getpass
from pathlib import Path

import pytest

from harness.vm import remote


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu:///session", "qemu+unix:///system"])
def test_a_uri_without_a_host_is_local(uri):
    assert remote.parse(uri) is None


def test_user_port_key_and_known_hosts_come_from_the_uri():
    hv = remote.parse("qemu+ssh://ops@hv1.example:2222/system"
                      "?keyfile=/k/id_ed25519&known_hosts=/k/known_hosts&no_tty=1")
    assert (hv.user, hv.host, hv.port) == ("ops", "hv1.example", 2222)
    assert hv.keyfile == Path("/k/id_ed25519")
    assert hv.known_hosts == (Path("/k/known_hosts"),)


def test_defaults_are_openssh_s_the_local_user_port_22_and_its_known_hosts():
    hv = remote.parse("qemu+libssh2://hv1.example/system")
    assert (hv.user, hv.port, hv.keyfile) == (getpass.getuser(), 22, None)
    assert hv.known_hosts == (Path("~/.ssh/known_hosts").expanduser(),
                              Path("/etc/ssh/ssh_known_hosts"))


@pytest.mark.parametrize("uri", ["qemu://hv1.example/system", "qemu+tcp://hv1.example/system",
                                 "qemu+tls://hv1.example/system"])
def test_a_remote_uri_without_ssh_is_refused_with_the_way_out(uri):
    with pytest.raises(remote.RemoteError, match=r"qemu\+ssh"):
        remote.parse(uri)

"""A second libvirt "host" on this machine for the remote-hypervisor tests: a real
sshd on 127.0.0.1 with its own port, config and host key (tests/hostile's Sshd),
in front of this machine's libvirtd. Not collected (no test_ prefix)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.seed import keys
from tests.hostile.hostile_helpers import SSHD, Sshd, free_port


@dataclass
class RemoteHost:
    sshd: Sshd
    uri: str
    known_hosts: Path


@contextmanager
def remote_host(folder: Path) -> Iterator[RemoteHost]:
    """The sshd, started, and the URI that reaches libvirt through it.

    The run's known_hosts holds the sshd's host key. libvirt's `ssh` transport
    leaves host keys to OpenSSH's own files (libvirt 9.0 virNetSocketNewConnectSSH),
    so the URI's `command` (libvirt's documented choice of ssh binary) is a wrapper
    that points OpenSSH at the same known_hosts, strictly: root's own
    ~/.ssh/known_hosts is never written."""
    if not SSHD.exists():
        raise RuntimeError("openssh-server is not installed (make deps installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    client = keys.generate(folder, "hypervisor_client", "harness-remote-test")
    host = keys.generate(folder, "hypervisor_host_ed25519", "remote-test-host")
    (folder / "authorized_keys").write_text(client.public + "\n")
    sshd = Sshd(free_port(), folder, client, host)
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {host.public}\n")
    wrapper = folder / "ssh"
    wrapper.write_text("#!/bin/sh\n"
                       f'exec ssh -o UserKnownHostsFile="{known}" '
                       '-o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null "$@"\n')
    wrapper.chmod(0o700)
    uri = (f"qemu+ssh://root@127.0.0.1:{sshd.port}/system?keyfile={client.private_path}"
           f"&known_hosts={known}&command={wrapper}")
    sshd.start()
    try:
        yield RemoteHost(sshd, uri, known)
    finally:
        sshd.stop(sessions=True)

"""A guest on a remote hypervisor (harness.vm.remote), for real: a second libvirt
"host" made of a real sshd on 127.0.0.1 in front of this machine's libvirtd
(tests/driver/remote_host.py). One cold boot."""


import libvirt
import pytest

from harness.paths import REPO
from harness.vm import runs
from harness.vm.machine import MachineError
from harness.vm.session import Options, Session
from tests.driver.remote_host import remote_host

pytestmark = pytest.mark.vm


def test_guest_traffic_goes_through_the_hypervisors_ssh_and_fails_clearly_without_it(
        tmp_path):
    with remote_host(tmp_path / "hypervisor") as host:
        session = Session(Options(libvirt_uri=host.uri, offline=True, saves=False,
                                  artifacts=REPO / "artifacts" / "remote-host"))
        session.open()
        try:
            m = session.machine("jumped", session.spec("refos"))
            # The forward stays on the hypervisor's loopback; the console is streamed
            # back (a pty there, this machine's console.log here) from its first line.
            assert "hostfwd=tcp:127.0.0.1:" in m.xml and "<serial type=\"pty\">" in m.xml
            assert "Linux version" in m.console_text()
            assert m.succeed("echo through the jump") == "through the jump\n"
            assert "ProxyCommand=" in m.ssh_command()

            host.sshd.stop(sessions=True)  # the hypervisor's sshd, and every hop through it
            with pytest.raises(MachineError) as lost:
                m.run("echo still here")
            # Named as the hypervisor lost, not the command's timeout.
            assert "hypervisor" in str(lost.value), str(lost.value)
        finally:
            session.close()  # its libvirt connection went with the sshd: the rest below
            local = libvirt.open("qemu:///system")  # the same libvirtd, reached directly
            try:
                if session.run is not None:
                    runs.sweep(local, finished=frozenset({session.run.id}))
            finally:
                local.close()

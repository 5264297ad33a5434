"""Forward ports on a remote hypervisor: picked there, and a port someone took
between the pick and QEMU's bind is noticed by the domain's start failing and
retried on another. The "remote" host is a real sshd on 127.0.0.1 in front of
this machine's libvirtd; the domains are tiny and paused (no OS boots)."""

import socket
import threading
import time
from pathlib import Path

import libvirt
import pytest
from hostile_helpers import free_port, paused_domain

from harness.vm import domain, remote, runs, storage
from harness.vm.session import Options, Session
from tests.driver.remote_host import remote_host


@pytest.fixture
def remote_session(tmp_path, runtime):
    with remote_host(tmp_path / "hypervisor") as host:
        session = Session(Options(libvirt_uri=host.uri, offline=True, saves=False,
                                  artifacts=tmp_path / "artifacts")).open()
        try:
            yield session
        finally:
            session.close()


def test_a_port_taken_before_qemu_binds_it_is_retried_on_another(remote_session, monkeypatch):
    s = remote_session
    assert isinstance(s.forward_port(), remote.RemotePort)  # chosen there, no local lock
    m = s.new_machine("collide", s.spec("refos"))
    with socket.socket() as taken:  # someone on the hypervisor's loopback took the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        # Injected: the pick returns the taken port once, as if it was taken just after
        # the probe (a race the real pick cannot be made to lose on purpose).
        picks = iter([remote.RemotePort(held)])
        real = s.forward_port
        monkeypatch.setattr(s, "forward_port", lambda: next(picks, None) or real())
        tried: list[int] = []

        def start(port: int):
            tried.append(port)
            return paused_domain(s.conn, s.run, "collide", port=port)

        m._start_on_a_free_port(start)
    assert tried[0] == held and len(tried) == 2
    assert m.port == tried[1] and m.running()
    runs.destroy_domain(m.res.domain)


def test_remote_console_streams_across_save_and_restore_and_the_domain_is_destroyed(
        remote_session):
    """The console of a domain on the hypervisor comes back here as it is printed, a
    template's save ends its stream and a restored copy gets a new one, and the domain
    is destroyed with its stream open (a blocking stream read once left
    virDomainDestroy waiting forever in a matrix teardown; not reproduced here on
    demand). The guest is refos's kernel booted directly with no root: it prints its
    boot and panics in seconds."""
    s = remote_session
    kernel = storage.upload(storage.pool(s.conn), s.run.volume_prefix() + "kernel",
                            s.spec("refos").image.kernel).path()
    spec = domain.DomainSpec(
        name=s.run.domain_name("streamed"), run_id=s.run.id, memory_mib=256, firmware="bios",
        disks=(), console_log=s.run.dir / "unused.log", ssh_port=free_port(),
        direct=domain.DirectBoot(kernel, "console=ttyS0 panic=0"),
        owner=s.run.owner.attrs(), console_stream=True)
    log = s.run.dir / "streamed.console.log"
    dom = s.conn.createXML(domain.domain_xml(spec), libvirt.VIR_DOMAIN_START_PAUSED)
    stream = remote.ConsoleStream(s.conn, dom, log)
    dom.resume()
    deadline = time.monotonic() + 120
    while "Linux version" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "nothing streamed from the console"
        time.sleep(0.5)
    # Saved, as a template is (the stream ends with the domain), then restored.
    saved = Path(storage.POOL_DIR) / (s.run.volume_prefix() + "memory.save")
    dom.save(str(saved))
    stream.close()
    s.conn.restoreFlags(str(saved), None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
    dom = s.conn.lookupByName(spec.name)
    stream = remote.ConsoleStream(s.conn, dom, log)
    dom.resume()
    destroyed = threading.Event()
    threading.Thread(target=lambda: (stream.close(), runs.destroy_domain(dom),
                                     destroyed.set()), daemon=True).start()
    assert destroyed.wait(60), "virDomainDestroy did not return"

"""--open-network: the one way to give guests the network (restrict=off), for a user
whose distro updates from its vendor's server. Off by default, never used by the
project's VM tests, and a session that opens it shares no saves. Nothing boots here."""

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from harness import catalog, seed
from harness.images import LocalImage
from harness.paths import REPO
from harness.vm import domain
from harness.vm.machine import MachineSpec
from harness.vm.session import Options, Session
from tests.helpers import run_pytest


def _machine_xml(session: Session, tmp_path: Path) -> str:
    """The domain XML a machine of `session` would boot from (no image is opened)."""
    spec = MachineSpec(catalog.get("refos"), LocalImage(Path("unused"), ""))
    m = session.new_machine("net", spec)
    m.seed = seed.Media({})
    xml = domain.domain_xml(m._domain_spec(40022))
    (tmp_path / "domain.xml").write_text(xml)
    return xml


def _valid(path: Path) -> None:
    if shutil.which("virt-xml-validate") is None:
        pytest.fail("virt-xml-validate is missing (Debian libvirt-clients; make deps)")
    out = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("open_network", "restrict"), [(False, "on"), (True, "off")])
def test_a_sessions_network_choice_reaches_the_domain_xml_and_libvirt_accepts_it(
        tmp_path, open_network, restrict):
    with Session(Options(open_network=open_network, offline=True,
                         artifacts=tmp_path / "artifacts")) as s:
        xml = _machine_xml(s, tmp_path)
        # Closed by default and saves in use; open: no save is made or restored.
        assert (s.templates is None) == open_network
    assert f"restrict={restrict},hostfwd=tcp:127.0.0.1:40022-:22" in xml
    assert f"restrict={'off' if restrict == 'on' else 'on'}" not in xml
    _valid(tmp_path / "domain.xml")


def test_the_option_makes_update_suites_of_network_mechanisms_run(tmp_path):
    """Collection only: RancherOS's updates come from Docker Hub, so its update promise
    is skipped unless guests reach the network."""
    test = tmp_path / "test_probe.py"
    test.write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.promise("update")
        def test_update():
            pass
    """))
    closed = run_pytest("-rA", "--rootdir", str(tmp_path), str(test), "--distro=rancheros",
                        cwd=tmp_path)
    assert "SKIPPED" in closed.stdout and "restrict=on" in closed.stdout, closed.stdout[-2000:]
    opened = run_pytest("-rA", "--rootdir", str(tmp_path), str(test), "--distro=rancheros",
                        "--open-network", cwd=tmp_path)
    assert opened.returncode == 0 and "PASSED" in opened.stdout, opened.stdout[-2000:]


def test_no_vm_test_make_target_or_ci_job_opens_the_network():
    folders = [REPO / "tests" / d for d in ("suites", "bugs", "driver")] + [REPO / "tools"]
    assert all(f.is_dir() for f in folders), folders  # a renamed folder would pass unseen
    places = [REPO / "Makefile", *(REPO / ".github").rglob("*.yml"),
              *(p for f in folders for p in f.rglob("*"))]
    opened = [str(p.relative_to(REPO)) for p in places if p.is_file() and p.suffix != ".pyc"
              and ("open-network" in (text := p.read_text(errors="replace"))
                   or "open_network" in text)]
    assert not opened, f"these open the guests' network: {opened}"

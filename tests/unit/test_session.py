"""One place assembles a run: the pytest plugin, the CLI, the bench and the matrix
all take their images, options and settings from harness.vm.session, so --offline,
--image and HARNESS_* mean the same on every path. Nothing here boots a VM."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import catalog, images, settings
from harness.paths import REPO
from harness.vm import session
from harness.vm.session import Images, Options
from tests.helpers import run_pytest


def _pytest(tmp_path: Path, body: str, *args: str, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    test = tmp_path / "test_probe.py"
    test.write_text(textwrap.dedent(body))
    return run_pytest("-rA", "--rootdir", str(tmp_path), str(test), *args, cwd=tmp_path,
                      env=env)


def test_offline_reaches_a_second_distro_and_its_absence_is_said_once(tmp_path, cache):
    """A test booting another distro than the session's (as bug cases do) gets the
    session's --offline: no download is tried, and the one message names the way out."""
    result = _pytest(tmp_path, """
        import pytest
        from harness import catalog

        @pytest.mark.parametrize("n", [1, 2])
        def test_other(machine_factory, n):
            machine_factory("other", distro=catalog.get("flatcar"))
    """, "--distro=refos", "--offline")
    assert result.returncode == 0, result.stdout[-3000:]
    out = result.stdout + result.stderr
    # One reason for both tests (pytest folds identical skips into one line).
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1 and skips[0].startswith("SKIPPED [2]"), skips
    assert "flatcar" in skips[0] and "not cached" in skips[0]
    assert "HARNESS_IMAGE_FLATCAR" in skips[0]
    assert "Traceback" not in out


def test_a_local_image_variable_serves_a_second_distro(tmp_path, cache, monkeypatch):
    disk = tmp_path / "flatcar.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    monkeypatch.setenv("HARNESS_IMAGE_FLATCAR", str(disk))
    image = Images(Options(offline=True)).get(catalog.get("flatcar"))
    assert image.source == str(disk.resolve())


def test_an_image_option_belongs_to_one_distro_only(tmp_path):
    result = _pytest(tmp_path, "def test_x(): pass\n", "--distro=refos,flatcar",
                     f"--image={tmp_path}/x.qcow2")
    assert result.returncode == 4
    assert "give it with one --distro" in result.stderr


def test_an_unavailable_image_is_remembered_not_fetched_again(cache):
    found = Images(Options(offline=True))
    with pytest.raises(images.ImageUnavailable) as first:
        found.get(catalog.get("rancheros"))
    with pytest.raises(images.ImageUnavailable) as second:
        found.get(catalog.get("rancheros"))
    assert first.value is second.value


# -- settings ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "says"), [
    ("HARNESS_TIMEOUT_SCALE", "abc", "HARNESS_TIMEOUT_SCALE='abc'"),
    ("HARNESS_TIMEOUT_SCALE", "-2", "positive"),
    ("HARNESS_TIMEOUT_SCALE", "nan", "positive"),
    ("HARNESS_FETCH_ATTEMPTS", "2.5", "HARNESS_FETCH_ATTEMPTS"),
    ("HARNESS_DISTRO", "../x", "HARNESS_DISTRO"),
    ("HARNESS_TIMOUT_SCALE", "2", "not a harness setting"),
])
def test_a_bad_setting_is_an_error_naming_the_variable(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingError, match=says.replace("(", r"\(")):
        settings.check()


def test_a_good_setting_is_read_as_its_type(monkeypatch):
    monkeypatch.setenv("HARNESS_TIMEOUT_SCALE", "2.5")
    monkeypatch.setenv("HARNESS_FETCH_ATTEMPTS", "3")
    settings.check()
    assert settings.get("HARNESS_TIMEOUT_SCALE") == 2.5
    assert settings.get("HARNESS_FETCH_ATTEMPTS") == 3


def test_a_bad_setting_stops_pytest_and_the_cli_as_a_usage_error(tmp_path):
    env = {"HARNESS_TIMEOUT_SCALE": "abc"}
    result = _pytest(tmp_path, "def test_x(): pass\n", env=env)
    assert result.returncode == 4 and "HARNESS_TIMEOUT_SCALE='abc'" in result.stderr
    cli = subprocess.run([sys.executable, "-m", "harness", "clean"], env={**os.environ, **env},
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "HARNESS_TIMEOUT_SCALE='abc'" in cli.stderr


# -- promises and the shared machine, decided before any boot -------------------------------

def test_a_promise_the_distro_does_not_make_skips_in_its_words_before_any_boot(cache):
    """RancherOS runs from RAM: its read-only tests skip with the catalog's note, not
    with "image not cached", which a fixture would have said had it run."""
    result = run_pytest("-rs", "--offline", "--distro=rancheros",
                        str(REPO / "tests/suites/test_readonly.py"))
    note = catalog.get("rancheros").promises.notes["readonly"]
    lines = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert sum(note in line for line in lines) == 2, result.stdout[-3000:]
    assert "not cached" not in result.stdout


def test_a_destructive_test_cannot_take_the_shared_machine(tmp_path, cache):
    result = _pytest(tmp_path, """
        import pytest

        @pytest.mark.destructive
        def test_changes_things(machine):
            pass
    """, "--offline", "--distro=rancheros")
    assert result.returncode == 1
    assert "is destructive: it must boot its own machine" in result.stdout


def test_an_image_option_naming_no_file_is_a_usage_error(tmp_path, cache):
    result = _pytest(tmp_path, """
        def test_boots(machine):
            pass
    """, "--distro=flatcar", f"--image={tmp_path}/nonexistent.qcow2")
    assert result.returncode == 4, result.stdout[-2000:]
    assert "nonexistent.qcow2" in result.stdout + result.stderr


# A URI no libvirt driver serves: connecting fails at once, and the error names it.
NOWHERE = "nowhere+unix:///system"


def test_the_cli_and_pytest_both_take_libvirt_default_uri():
    """One place decides the connection: LIBVIRT_DEFAULT_URI reaches `harness clean`
    (it connects, fails and names the URI) and the pytest plugin's session options."""
    env = {**os.environ, "LIBVIRT_DEFAULT_URI": NOWHERE}
    cli = subprocess.run([sys.executable, "-m", "harness.cli", "clean"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and f"libvirt at {NOWHERE}" in cli.stderr, cli.stderr
    probe = run_pytest("-q", "-s", "-p", "tests.unit.uri_probe", "--co",
                       str(REPO / "tests" / "unit" / "uri_probe.py"), env=env)
    assert f"session uri: {NOWHERE}" in probe.stdout, probe.stdout + probe.stderr


def test_a_uri_on_the_command_line_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", NOWHERE)
    assert Options().libvirt_uri == NOWHERE
    assert session.libvirt_uri("qemu:///session") == "qemu:///session"
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI")
    assert Options().libvirt_uri == "qemu:///system"


# -- a template that fails to boot --------------------------------------------------------

def test_a_failed_template_boot_is_said_once_per_spec_to_every_test_that_wanted_it(
        cache, monkeypatch):
    """The boot is a fake that fails (a real guest cannot be made to fail on cue):
    it counts boots and leaves a console line. Later machines of the same spec get
    the first failure, console path and message included, without a boot; another
    spec still boots."""
    from types import SimpleNamespace

    from harness.vm.machine import BootFailure, Machine, MachineSpec
    from harness.vm.session import Session, SessionError, TemplateFailed

    boots: list[str] = []

    def failing_start(self):
        boots.append(self.name)
        self.console_log.write_text("BdsDxe: failed to load Boot0001\n")
        raise BootFailure(f"{self.name}: kernel on the console: not within 300s")

    monkeypatch.setattr(Machine, "start", failing_start)
    refos = catalog.get("refos")
    spec = MachineSpec(refos, SimpleNamespace(key="img-1"))
    other = MachineSpec(refos, SimpleNamespace(key="img-2"))
    session = Session(Options(accel="tcg", offline=True))
    try:
        session.open()
    except SessionError as e:
        pytest.skip(f"libvirt is not reachable: {e}")
    try:
        with pytest.raises(BootFailure) as first:
            session.machine("t1", spec)
        later = []
        for name in ("t2", "t3"):
            with pytest.raises(TemplateFailed) as e:
                session.machine(name, spec)
            later.append(str(e.value))
        assert len(boots) == 1 and not isinstance(first.value, TemplateFailed)
        template = next(m for m in session.machines if m.name == boots[0])
        for said, name in zip(later, ("t2", "t3"), strict=True):
            assert said.startswith(f"{name}: the template {boots[0]}")
            assert "failed to boot for t1" in said and str(first.value) in said
            assert str(template.console_log) in said
        with pytest.raises(BootFailure):
            session.machine("t4", other)
        assert len(boots) == 2
    finally:
        session.close()

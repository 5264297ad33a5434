"""The pytest plugin: --distro and friends, and the fixtures that boot machines.

Registered through the `pytest11` entry point, so `pytest --distro=NAME` works
from any directory once the package is installed.
"""

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness import catalog, images, matrix
from harness.log import log
from harness.paths import REPO
from harness.plugin import evidence
from harness.vm import accel, runs, snapshot
from harness.vm.machine import Machine, MachineError

MARKERS = {
    "vm": "boots at least one virtual machine",
    "destructive": "changes the machine (reboots, updates): gets its own machine",
    "cold_boot: this test's machines boot from scratch instead of being restored": "",
    "allow(*checks): let this test's machines show these badness checks (harness.plugin.evidence."
    "CHECKS), e.g. allow('segfault')": "",
    "bug(url, affected, fixed): reproduces a reported bug; parametrize the test over "
    "`bug_distro`, and it is a strict expected failure on the affected distros": "",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "container OS harness")
    group.addoption("--distro", default=os.environ.get("HARNESS_DISTRO", "refos"),
                    help="catalog entry to boot (default: refos); a,b,c or all for several")
    group.addoption("--accel", default="auto", choices=("auto", "kvm", "tcg"),
                    help="accelerator; auto probes KVM and falls back to TCG")
    group.addoption("--require-kvm", action="store_true", help="fail instead of using TCG")
    group.addoption("--libvirt-uri", default=os.environ.get("LIBVIRT_DEFAULT_URI",
                                                            "qemu:///system"))
    group.addoption("--artifacts", default=str(REPO / "artifacts"),
                    help="where console logs, domain XML and timings are kept")
    group.addoption("--cold-boots", action="store_true",
                    help="boot every machine instead of restoring saved ones")
    group.addoption("--keep-artifacts", action="store_true",
                    help="keep each test's evidence folder even when it passed")
    group.addoption("--keep-vm", action="store_true",
                    help="leave a failed test's VM running and print how to get in")
    group.addoption("--offline", action="store_true",
                    help="use cached images only; never download")
    group.addoption("--image", default=None,
                    help="boot this local image file instead of the catalog's download")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}" if text else name)
    spec = config.getoption("--distro")
    try:
        matrix.select(spec)
    except catalog.CatalogError as e:
        raise pytest.UsageError(f"--distro={spec}: {e}") from None
    # SIGTERM unwinds like Ctrl-C, so fixture teardown removes the machines.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # testinfra's own pytest plugin defines a `host` fixture over its own connections
    # (--hosts); ours below runs over the harness's SSH, so theirs must not shadow it.
    theirs = config.pluginmanager.get_plugin("pytest11.testinfra")
    if theirs is not None:
        config.pluginmanager.unregister(theirs)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A bug reproduction must fail where the bug is, and pass where it was fixed."""
    for item in items:
        bug = item.get_closest_marker("bug")
        params = getattr(item, "callspec", None)
        if bug is None or params is None or "bug_distro" not in params.params:
            continue
        target = params.params["bug_distro"]
        if target in bug.kwargs.get("affected", ()):
            # Only the bug's symptom, reported with pytest.fail, counts: a failed
            # precondition or a harness error on the way is a real failure.
            item.add_marker(pytest.mark.xfail(
                strict=True, raises=pytest.fail.Exception,
                reason=f"{target} is affected by "
                f"{bug.kwargs.get('url') or 'a reported bug with no tracker link'}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item: teardown code needs the outcome."""
    report = yield
    setattr(item, f"harness_report_{report.when}", report)
    return report


def _failed(item: pytest.Item) -> bool:
    return any(getattr(item, f"harness_report_{phase}", None) is not None
               and getattr(item, f"harness_report_{phase}").failed for phase in ("setup", "call"))


def _check_and_record(item: pytest.Item, m: Machine, console_from: int, since_us: int
                      ) -> list[str]:
    """Badness checks for one machine after one test, and its evidence folder,
    kept when the test failed (or --keep-artifacts)."""
    allowed = {name for mark in item.iter_markers("allow") for name in mark.args}
    problems = evidence.console_problems(m.console_text()[console_from:], allowed)
    try:
        problems += evidence.guest_problems(m, since_us, allowed)
    except (MachineError, OSError) as e:
        problems.append(f"guest checks could not run: {e}")
    failed = _failed(item) or bool(problems)
    config = item.config
    if failed or config.getoption("--keep-artifacts"):
        dest = Path(config.getoption("--artifacts")) / m.distro.name / "tests" / \
            evidence.node_dir(item.nodeid) / m.name
        evidence.save(m, dest, journal=failed)
        log.info("%s: evidence kept in %s", m.name, dest)
    return [f"{m.name}: {p}" for p in problems]


@pytest.fixture(autouse=True)
def _shared_machine_checks(request: pytest.FixtureRequest) -> Iterator[None]:
    """The shared machine outlives tests, so each test checks only what it added."""
    if "machine" not in request.fixturenames:
        yield
        return
    m = request.getfixturevalue("machine")
    console_from, since_us = len(m.console_text()), evidence.guest_clock_us(m)
    yield
    if problems := _check_and_record(request.node, m, console_from, since_us):
        pytest.fail("badness found after the test:\n  " + "\n  ".join(problems))


def _selected(config: pytest.Config) -> list[str]:
    return matrix.select(config.getoption("--distro"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Several distros: each test runs once per distro. Without xdist the distros run
    one after the other, each torn down before the next; with `-n N --dist loadgroup`
    each distro's tests go to one worker (below), so its VMs live there."""
    names = _selected(metafunc.config)
    if len(names) > 1 and "distro" in metafunc.fixturenames:
        metafunc.parametrize("distro", names, ids=names, indirect=True, scope="session")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` with several distros: one distro's tests on one worker."""
    names = _selected(config)
    if len(names) > 1 and config.getoption("dist") == "loadgroup":
        return matrix.distro_scheduler(names)(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: as many workers as the selected distros' VMs that fit in free memory."""
    needs = [matrix.need_mib(j) for j in matrix.jobs(_selected(config))]
    return max(1, min(len(needs), matrix.budget(needs, matrix.mem_available_mib())))


@pytest.fixture(scope="session")
def distro(request: pytest.FixtureRequest) -> catalog.Distro:
    return catalog.get(getattr(request, "param", None) or _selected(request.config)[0])


@pytest.fixture(scope="session")
def libvirt_conn(pytestconfig: pytest.Config) -> Iterator[libvirt.virConnect]:
    uri = pytestconfig.getoption("--libvirt-uri")
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        pytest.fail(f"cannot connect to libvirt at {uri}: {e}\n"
                    "start the daemons with `make services` (virtlogd -d; libvirtd -d)")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def harness_run(libvirt_conn: libvirt.virConnect) -> Iterator[runs.Run]:
    runs.sweep(libvirt_conn)  # what earlier, killed runs left behind
    run = runs.Run.start(libvirt_conn)
    log.info("harness: run %s (%s)", run.id, run.dir)
    yield run
    runs.sweep(libvirt_conn, finished=frozenset({run.id}))  # the run is over: leave nothing


@pytest.fixture(scope="session")
def local_image(pytestconfig: pytest.Config, distro: catalog.Distro) -> images.LocalImage:
    try:
        image = images.resolve(distro, offline=pytestconfig.getoption("--offline"),
                               image_path=pytestconfig.getoption("--image"))
    except images.ImageUnavailable as e:
        pytest.skip(str(e))
    # The concrete image (version, digest, source) is part of the run's record.
    record = Path(pytestconfig.getoption("--artifacts")) / distro.name / "image.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(image.record(), indent=2) + "\n")
    return image


@pytest.fixture(scope="session")
def accelerator(pytestconfig: pytest.Config, local_image: images.LocalImage) -> str:
    try:
        return accel.choose(pytestconfig.getoption("--accel"), local_image.kernel,
                            pytestconfig.getoption("--require-kvm"))
    except accel.AccelError as e:
        pytest.fail(str(e))


class MachineFactory:
    """Boots machines for one scope and removes them when the scope ends.

    By default a machine is restored from a saved copy of a booted one
    (harness.vm.snapshot): the first machine of each recipe (distro, seed, extra
    configuration) is booted cold through the session's factory and saved.
    `cold=True`, the `cold_boot` marker or --cold-boots boot every machine."""

    def __init__(self, request: pytest.FixtureRequest, run: runs.Run,
                 conn: libvirt.virConnect, distro: catalog.Distro,
                 image: images.LocalImage, accel_name: str, artifacts: Path,
                 templates: snapshot.Templates | None, session: "MachineFactory | None" = None):
        self.request, self.run, self.conn = request, run, conn
        self.distro, self.image, self.accel = distro, image, accel_name
        self.artifacts, self.templates = artifacts, templates
        self.session = session or self
        self.machines: list[Machine] = []
        self._shared: Machine | None = None

    def __call__(self, name: str, extra_config: dict | str | None = None,
                 distro: catalog.Distro | None = None, seed_format: str = "",
                 cold: bool = False) -> Machine:
        """A ready machine `name` of the session's distro, or of `distro` (bug cases
        boot the exact image a bug was reported against); `seed_format` overrides
        the catalog's first-boot format (harness.seed.FORMATS)."""
        distro = distro or self.distro
        image = self.image if distro == self.distro else images.resolve(distro)
        m = Machine(name, distro, self.run, self.conn, image.path, image.key, self.accel,
                    extra_config, seed_format=seed_format)
        self.machines.append(m)
        cold = cold or self.templates is None or \
            self.request.node.get_closest_marker("cold_boot") is not None
        try:
            if cold:
                return m.start()
            key = snapshot.save_key(image.key, distro.name, seed_format, extra_config)
            return self.templates.restore(key, lambda: self.session(
                f"{distro.name}-t{key[:6]}", extra_config, distro, seed_format, cold=True), m)
        except BaseException:
            self._keep_evidence(m)
            raise

    def shared(self) -> Machine:
        """The machine tests share when they do not change it (restored again if a
        fresh machine of the same save took its place)."""
        if self._shared is None or self._shared.res.domain is None:
            self._shared = self(f"{self.distro.name}-shared".replace("_", "-"))
        return self._shared

    def close(self) -> None:
        """Check and record each machine, then remove it (or keep it, failed, with --keep-vm)."""
        item = self.request.node
        per_test = isinstance(item, pytest.Item)
        problems: list[str] = []
        for m in self.machines:
            self._keep_evidence(m)
            if per_test and m.running():
                problems += _check_and_record(item, m, 0, 0)
                if (_failed(item) or problems) and item.config.getoption("--keep-vm"):
                    print(f"\n{evidence.ssh_hint(m)}")
                    continue
            m.destroy()
        if self.templates is not None and self.session is self:
            self.templates.close()
        if problems:
            pytest.fail("badness found after the test:\n  " + "\n  ".join(problems))

    def _keep_evidence(self, m: Machine) -> None:
        dest = self.artifacts / self.distro.name / m.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("console.log", "domain.xml"):
            if (m.dir / name).exists():
                shutil.copy(m.dir / name, dest / name)
        (dest / "timings.json").write_text(json.dumps(m.timings, indent=2) + "\n")


def _factory(request, harness_run, libvirt_conn, distro, local_image, accelerator,
             session: MachineFactory | None = None) -> MachineFactory:
    cold = request.config.getoption("--cold-boots")
    templates = None if cold else (session.templates if session else
                                   snapshot.Templates(libvirt_conn))
    return MachineFactory(request, harness_run, libvirt_conn, distro, local_image, accelerator,
                          Path(request.config.getoption("--artifacts")), templates, session)


@pytest.fixture(scope="session")
def session_machines(request, harness_run, libvirt_conn, distro, local_image, accelerator
                     ) -> Iterator[MachineFactory]:
    factory = _factory(request, harness_run, libvirt_conn, distro, local_image, accelerator)
    yield factory
    factory.close()


@pytest.fixture
def machine_factory(request, session_machines, harness_run, libvirt_conn, distro, local_image,
                    accelerator) -> Iterator[MachineFactory]:
    """Machines that live for one test: `machine_factory("name")`."""
    factory = _factory(request, harness_run, libvirt_conn, distro, local_image, accelerator,
                       session_machines)
    yield factory
    factory.close()


@pytest.fixture
def machine(session_machines: MachineFactory) -> Machine:
    """The machine shared by tests that do not change it."""
    return session_machines.shared()


@pytest.fixture
def host(machine: Machine):
    """The shared machine as a pytest-testinfra Host, over the harness's SSH:
    `host.service("docker").is_running`, `host.mount_point("/").options`."""
    from harness.plugin.testinfra import host_for

    return host_for(machine)

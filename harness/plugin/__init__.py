"""The pytest plugin: --distro and friends, and the fixtures that boot machines.

Registered through the `pytest11` entry point, so `pytest --distro=NAME` works
from any directory once the package is installed. The run itself is a
harness.vm.session.Session; the fixtures below only map pytest's scopes, markers
and evidence onto it.
"""

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness import catalog, images, matrix, settings
from harness.log import log
from harness.paths import REPO
from harness.plugin import bugs, evidence, promises
from harness.signals import unwind_on_sigterm
from harness.vm import accel
from harness.vm import cluster as clusters
from harness.vm.machine import KernelBoot, Machine, MachineError, MachineSpec
from harness.vm.session import Options, Session, SessionError, libvirt_uri

MARKERS = {
    "vm": "boots at least one virtual machine",
    "destructive": "changes the machine (reboots, updates): gets its own machine, never the "
    "shared one",
    "cold_boot: this test's machines boot from scratch instead of being restored": "",
    "allow(*checks): let this test's machines show these badness checks (harness.plugin."
    "evidence.CHECKS), e.g. allow('segfault')": "",
    "promise(*names): the test checks these catalog promises (harness.plugin.promises."
    "PROMISES); skipped before any boot, in the catalog's words, where they are not made": "",
    "bug(url, affected, symptom, fixed, affected_versions, fixed_versions, nearest): the "
    "test meets a reported bug (url \"\" when none was found, nearest: the closest "
    "report); on an affected distro (the `bug_distro` parameter, else the run's) a "
    "failure whose message matches the symptom (a regular expression) is "
    "\"reproduces <url>\", any other failure or a pass is red": "",
    "cluster(size=3, config=None): the `cluster` fixture's members (harness.vm.cluster); "
    "config(plan) returns a member's extra configuration in the distro's seed format. "
    "Skipped before any boot where a cluster cannot run (seed format, remote "
    "hypervisor, memory)": "",
}


_DISTROS = pytest.StashKey[list[str]]()
_CATALOG = pytest.StashKey[dict[str, catalog.Distro]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "container OS harness")
    group.addoption("--distro", default=None,
                    help="catalog entry to boot (default: HARNESS_DISTRO or refos); "
                    "a,b,c or all for several")
    group.addoption("--accel", default="auto", choices=("auto", "kvm", "tcg"),
                    help="accelerator; auto probes KVM and falls back to TCG")
    group.addoption("--require-kvm", action="store_true", help="fail instead of using TCG")
    group.addoption("--libvirt-uri", default=None,
                    help="libvirt connection (default: LIBVIRT_DEFAULT_URI or qemu:///system)")
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
    group.addoption("--open-network", action="store_true",
                    help="let guests reach every network this host reaches (restrict=off), "
                    "for updates from a vendor's server; machines boot cold")
    group.addoption("--image", default=None,
                    help="boot this local image file instead of the catalog's download "
                    "(one --distro only)")


def _selected(config: pytest.Config) -> list[str]:
    """The distros of this run, decided once when pytest starts (pytest_configure)."""
    return config.stash[_DISTROS]


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}" if text else name)
    try:
        images.check_settings()
        config.stash[_CATALOG] = catalog.load()  # read once: hooks below run per test
        names = matrix.select(config.getoption("--distro") or settings.get("HARNESS_DISTRO"),
                              config.stash[_CATALOG])
        config.stash[_DISTROS] = names
    except (settings.SettingError, catalog.CatalogError) as e:
        raise pytest.UsageError(str(e)) from None
    if config.getoption("--image") and len(names) != 1:
        raise pytest.UsageError(f"--image={config.getoption('--image')}: give it with one "
                                f"--distro, not {len(names)}")
    # SIGTERM unwinds like Ctrl-C, so fixture teardown removes the machines.
    config._harness_unwind = unwind_on_sigterm()  # type: ignore[attr-defined]
    config._harness_unwind.__enter__()  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    unwind = getattr(config, "_harness_unwind", None)
    if unwind is not None:
        unwind.__exit__(None, None, None)


def _item_distro(item: pytest.Item) -> str:
    params = getattr(item, "callspec", None)
    if params is not None and "distro" in params.params:
        return params.params["distro"]
    return _selected(item.config)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Decide before any boot: promises a distro does not make skip their tests in the
    catalog's words; a bug marker must be one the run can judge by."""
    known = config.stash[_CATALOG]
    for item in items:
        distro = known[_item_distro(item)]
        names = [n for mark in item.iter_markers("promise") for n in mark.args]
        why = names and promises.unmet(names, distro, config.getoption("--open-network"))
        if not why and "cluster" in getattr(item, "fixturenames", ()):
            why = _cluster_refusal(item, distro)
        if why:
            item.add_marker(pytest.mark.skip(reason=why))
        _bug(item)


def cluster_mark(node: pytest.Item | pytest.Collector) -> tuple[int, clusters.ConfigFn | None]:
    """(size, config) of the `cluster` marker closest to `node` (a test or its module);
    size 3 and no config when there is none."""
    mark = node.get_closest_marker("cluster")
    kwargs = dict(mark.kwargs) if mark is not None else {}
    size, config = kwargs.pop("size", 3), kwargs.pop("config", None)
    if kwargs or (mark is not None and mark.args) or not isinstance(size, int) or \
            (config is not None and not callable(config)):
        raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.cluster takes size=<int> and "
                                "config=<callable(plan) -> extra configuration>, nothing else")
    return size, config


def _cluster_refusal(item: pytest.Item, distro: catalog.Distro) -> str | None:
    """Why `item`'s cluster cannot run here, decided from the catalog and options alone
    (no image is resolved, nothing boots)."""
    size, _ = cluster_mark(item)
    config = item.config
    remote = bool(urllib.parse.urlsplit(libvirt_uri(config.getoption("--libvirt-uri"))
                                        ).hostname)
    spec = MachineSpec(distro, None)  # type: ignore[arg-type] - the image is not needed
    budget = matrix.mem_available_mib() - matrix.MARGIN_MIB
    return clusters.refusal(spec, size, remote, budget, config.getoption("--accel"))


def _bug(item: pytest.Item) -> bugs.Bug | None:
    """The bug `item` meets, if its distro is affected (the `bug_distro` it is
    parametrized with, else the run's)."""
    mark = item.get_closest_marker("bug")
    if mark is None:
        return None
    try:
        bug = bugs.Bug.from_mark(mark, item.nodeid)
    except bugs.BugMarkError as e:
        raise pytest.UsageError(str(e)) from None
    params = getattr(item, "callspec", None)
    target = params.params["bug_distro"] if params is not None and \
        "bug_distro" in params.params else _item_distro(item)
    return bug if target in bug.affected else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item (teardown code needs the outcome), and
    judge a test on a distro a bug it meets affects."""
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        _judge_bug(item, call, report)
    setattr(item, f"harness_report_{report.when}", report)
    return report


def _judge_bug(item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport) -> None:
    bug = _bug(item)
    if bug is None:
        return
    message = str(call.excinfo.value) if call.excinfo is not None else ""
    verdict = bugs.judge(bug, report.outcome, message)
    if verdict.reproduces:
        report.outcome, report.wasxfail = "skipped", f"reproduces {verdict.reproduces}"
    elif verdict.message:
        report.outcome = "failed"
        report.longrepr = f"{verdict.message}\n{report.longreprtext}".rstrip()


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


_WATCHED = pytest.StashKey[set[int]]()


@pytest.fixture(autouse=True)
def _shared_machine_checks(request: pytest.FixtureRequest) -> None:
    """Every test that uses the shared machine is checked for what it added."""
    if "machine" in request.fixturenames:
        watch_shared(request, request.getfixturevalue("machine"))


def watch_shared(request: pytest.FixtureRequest, m: Machine) -> None:
    """The shared machine outlives tests, so a test checks, and keeps as evidence,
    only what it added from now on. For a test that reaches the shared machine
    later than its start (a bug case's boot_bug_distro) as well."""
    watched = request.node.stash.setdefault(_WATCHED, set())
    if id(m) in watched:
        return
    watched.add(id(m))
    console_from, since_us = len(m.console_text()), evidence.guest_clock_us(m)

    def after() -> None:
        if problems := _check_and_record(request.node, m, console_from, since_us):
            pytest.fail("badness found after the test:\n  " + "\n  ".join(problems))

    request.addfinalizer(after)


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
    needs = [matrix.need_mib(j, config.getoption("--accel"))
             for j in matrix.jobs(_selected(config))]
    return max(1, min(len(needs), matrix.budget(needs, matrix.mem_available_mib())))


def session_options(config: pytest.Config) -> Options:
    """The session's options from pytest's command line."""
    image = config.getoption("--image")
    return Options(
        libvirt_uri=libvirt_uri(config.getoption("--libvirt-uri")),
        accel=config.getoption("--accel"), require_kvm=config.getoption("--require-kvm"),
        offline=config.getoption("--offline"),
        images={_selected(config)[0]: Path(image)} if image else {},
        artifacts=Path(config.getoption("--artifacts")),
        saves=not config.getoption("--cold-boots"),
        open_network=config.getoption("--open-network"))


@pytest.fixture(scope="session")
def harness_session(pytestconfig: pytest.Config) -> Iterator[Session]:
    """The run: libvirt connection, run folder, accelerator, images and saves."""
    session = Session(session_options(pytestconfig))
    try:
        session.open()
    except SessionError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield session
    finally:
        try:  # every machine's console and timings, templates included
            for m in session.machines:
                evidence.keep(m, session.options.artifacts / m.distro.name / m.name)
        finally:
            session.close()


@pytest.fixture(scope="session")
def distro(request: pytest.FixtureRequest) -> catalog.Distro:
    return request.config.stash[_CATALOG][getattr(request, "param", None) or
                                          _selected(request.config)[0]]


@pytest.fixture(scope="session")
def libvirt_conn(harness_session: Session) -> libvirt.virConnect:
    return harness_session.conn


def _image(session: Session, distro: catalog.Distro) -> images.LocalImage:
    """The distro's image; its unavailability is one line per test (said once in
    the log): a skip under --offline, an error otherwise."""
    try:
        return session.images.get(distro)
    except images.ImageUsageError as e:  # --image or HARNESS_IMAGE_* names no usable file
        pytest.exit(f"usage error: {e}", returncode=pytest.ExitCode.USAGE_ERROR)
    except images.ImageUnavailable as e:
        if session.options.offline:
            pytest.skip(e.line())
        pytest.fail(e.line(), pytrace=False)


@pytest.fixture(scope="session")
def local_image(harness_session: Session, distro: catalog.Distro) -> images.LocalImage:
    return _image(harness_session, distro)


@pytest.fixture(scope="session")
def accelerator(harness_session: Session, local_image: images.LocalImage) -> str:
    try:
        return harness_session.accel
    except accel.AccelError as e:
        pytest.fail(str(e), pytrace=False)


class MachineFactory:
    """Boots machines for one scope (a test, or the session) and removes them when
    the scope ends, keeping their evidence. Machines come from the Session:
    restored from a save unless `cold`, the `cold_boot` marker or --cold-boots."""

    def __init__(self, request: pytest.FixtureRequest, session: Session,
                 distro: catalog.Distro):
        self.request, self.session, self.distro = request, session, distro
        self.machines: list[Machine] = []
        self._shared: Machine | None = None

    def __call__(self, name: str, extra_config: dict | str | None = None,
                 distro: catalog.Distro | None = None, seed_format: str = "",
                 cold: bool = False, kernel_boot: KernelBoot | None = None) -> Machine:
        """A ready machine `name` of the session's distro, or of `distro` (bug cases
        boot the exact image a bug was reported against); `seed_format` overrides
        the catalog's first-boot format (harness.seed.WRITERS)."""
        distro = distro or self.distro
        _image(self.session, distro)
        spec = self.session.spec(distro, seed_format, extra_config, kernel_boot)
        cold = cold or self.request.node.get_closest_marker("cold_boot") is not None
        m = self.session.machine(name, spec, cold=cold)
        self.machines.append(m)
        return m

    def shared(self) -> Machine:
        """The machine tests share when they do not change it (restored again if a
        fresh machine of the same save took its place)."""
        if self._shared is None or self._shared.res.domain is None:
            self._shared = self(f"{self.distro.name}-shared")
        return self._shared

    def close(self) -> None:
        """Check and record each machine, then remove it (or keep it, failed, with --keep-vm)."""
        item = self.request.node
        per_test = isinstance(item, pytest.Item)
        problems: list[str] = []
        for m in self.machines:
            if per_test and m.running():
                problems += _check_and_record(item, m, 0, 0)
                if (_failed(item) or problems) and item.config.getoption("--keep-vm"):
                    print(f"\n{evidence.ssh_hint(m)}")
                    continue
            m.destroy()
        if problems:
            pytest.fail("badness found after the test:\n  " + "\n  ".join(problems))


@pytest.fixture(scope="session")
def session_machines(request, harness_session, distro) -> Iterator[MachineFactory]:
    factory = MachineFactory(request, harness_session, distro)
    yield factory
    factory.close()


@pytest.fixture
def machine_factory(request, harness_session, distro, session_machines
                    ) -> Iterator[MachineFactory]:
    """Machines that live for one test: `machine_factory("name")`."""
    factory = MachineFactory(request, harness_session, distro)
    yield factory
    factory.close()


@pytest.fixture
def machine(request: pytest.FixtureRequest) -> Machine:
    """The machine shared by tests that do not change it (refused, before anything
    starts, to a destructive test)."""
    if request.node.get_closest_marker("destructive") is not None:
        pytest.fail(f"{request.node.nodeid} is destructive: it must boot its own machine "
                    "with machine_factory, not change the shared one", pytrace=False)
    return request.getfixturevalue("session_machines").shared()


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, harness_session: Session,
            distro: catalog.Distro) -> Iterator[clusters.Cluster]:
    """A cluster of the run's distro, shared by the tests of a module
    (harness.vm.cluster.Cluster): `cluster.members`, `cluster.address(m)`,
    `cluster.destroy_member(m)`, `cluster.start_member(m)`. Its size and each
    member's configuration come from `@pytest.mark.cluster(size=3, config=fn)` on
    the module (`pytestmark`) or on its tests that use it (all the same). Members
    come from saves, each its own (cold with the `cold_boot` marker on the module,
    or --cold-boots)."""
    size, config = _module_cluster_mark(request)
    _image(harness_session, distro)
    spec = harness_session.spec(distro)
    c = clusters.Cluster(harness_session, spec, size, config,
                         cold=request.node.get_closest_marker("cold_boot") is not None)
    try:
        c.start()
    except clusters.ClusterError as e:
        c.close()
        pytest.fail(str(e), pytrace=False)
    try:
        yield c
    finally:
        c.close()


def _module_cluster_mark(request: pytest.FixtureRequest) -> tuple[int, clusters.ConfigFn | None]:
    """The marker of the module, else the one its cluster tests agree on."""
    module = request.node
    if module.get_closest_marker("cluster") is not None:
        return cluster_mark(module)
    marks = {cluster_mark(item) for item in request.session.items
             if item.module is getattr(module, "obj", None)
             and "cluster" in getattr(item, "fixturenames", ())}
    if len(marks) > 1:
        raise pytest.UsageError(f"{module.nodeid}: its tests ask for clusters of different "
                                "size or config; they share one (module scope): mark the "
                                "module (pytestmark) or split the module")
    return marks.pop() if marks else (3, None)


@pytest.fixture
def testinfra_host(machine: Machine):
    """The shared machine as a pytest-testinfra Host, over the harness's SSH:
    `testinfra_host.service("docker").is_running`.

    Not named `host`: pytest-testinfra's own plugin defines a `host` fixture (over
    its --hosts connections), and which of two plugins' same-named fixtures a test
    gets depends on the order pytest loads them, which differs between `pytest`,
    `harness run` and `harness matrix`. A conftest may alias it as `host`
    (tests/suites/conftest.py does): a conftest's fixture always wins over a plugin's."""
    from harness.plugin.testinfra import host_for

    return host_for(machine)

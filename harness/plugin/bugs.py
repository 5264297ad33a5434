"""Reported bugs, as data on the tests that meet them. The `bug` marker names the
report (url, or the nearest one), the distros it affects and those that fixed it,
and the symptom its failure shows. On an affected distro a failure whose message
matches the symptom is "reproduces <url>", not red; another failure, or a pass
(fixed, or changed), is red. `harness repro BUG` finds a case in tests/bugs through
pytest's own collection: the library imports no test module."""

import contextlib
import io
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from harness.paths import REPO

BUGS = REPO / "tests" / "bugs"


class BugMarkError(ValueError):
    """A `bug` marker the plugin cannot judge by; the message names the test."""


@dataclass(frozen=True)
class Bug:
    url: str  # "" when no report was found (then `nearest`)
    affected: tuple[str, ...]
    symptom: str  # a regular expression (re.DOTALL) the failure's message matches
    fixed: tuple[str, ...] = ()
    nearest: str = ""  # the closest upstream report, when the bug itself has none
    affected_versions: tuple[str, ...] = ()
    fixed_versions: tuple[str, ...] = ()

    @classmethod
    def from_mark(cls, mark: pytest.Mark, where: str) -> "Bug":
        names = {f.name for f in fields(cls)}
        kw = mark.kwargs
        if mark.args or set(kw) - names or not kw.get("symptom") or "affected" not in kw:
            raise BugMarkError(f"{where}: @pytest.mark.bug takes keywords only, "
                               f"{', '.join(sorted(names))}, with affected and a symptom "
                               f"(a regular expression); got {mark.args} {sorted(kw)}")
        return cls(**{k: tuple(v) if isinstance(v, list | tuple) else
                      v.pattern if isinstance(v, re.Pattern) else v for k, v in kw.items()})

    def link(self) -> str:
        return link(self.url, self.nearest)

    def shows_in(self, message: str) -> bool:
        return re.search(self.symptom, message, re.DOTALL) is not None


def link(url: str, nearest: str = "") -> str:
    """The tracker link, or what is known instead: none, or the nearest report."""
    if url:
        return url
    return f"no tracker link; nearest report {nearest}" if nearest else "no tracker link"


@dataclass(frozen=True)
class Verdict:
    """What a test's outcome means once the bug it meets is taken into account."""

    outcome: str  # "passed", "failed", "skipped" (pytest's words)
    reproduces: str = ""  # the report's link, when the failure is the bug
    message: str = ""  # why a bug's test is red


def judge(bug: Bug, outcome: str, message: str) -> Verdict:
    """The outcome, on a distro `bug` affects, of a test marked with it: a failure
    with the symptom reproduces it (not red); a failure without it stays red; a pass
    is red too, since the bug no longer reproduces (fixed, or changed)."""
    if outcome == "failed":
        if bug.shows_in(message):
            return Verdict("skipped", reproduces=bug.url or bug.nearest)
        return Verdict("failed", message=f"failed, but not with the symptom of {bug.link()} "
                                         f"({bug.symptom!r}): a different failure")
    if outcome == "passed":
        return Verdict("failed", message=f"passed, but {bug.link()} was expected to reproduce "
                                         f"({bug.symptom!r}): fixed or changed? update the "
                                         "test's bug marker")
    return Verdict(outcome)


@dataclass(frozen=True)
class BugCase:
    """A test marked with a bug, as pytest collected it (its id without parameters)."""

    name: str  # the module's name without test_: `harness repro NAME`
    nodeid: str
    bug: Bug

    def node(self, distro: str) -> str:
        """The pytest node id of this case for one `bug_distro`, as an absolute path, so
        pytest finds it whatever the current folder."""
        return f"{REPO / self.nodeid}[{distro}]"


class _Collector:
    """A pytest plugin that keeps the bug markers of what pytest collects."""

    def __init__(self) -> None:
        self.cases: dict[str, BugCase] = {}
        self.errors: list[str] = []

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            mark = item.get_closest_marker("bug")
            if mark is None:
                continue
            nodeid = item.nodeid.split("[", 1)[0]
            name = Path(item.path).stem.removeprefix("test_")
            try:
                self.cases.setdefault(nodeid, BugCase(name, nodeid,
                                                      Bug.from_mark(mark, nodeid)))
            except BugMarkError as e:
                self.errors.append(str(e))


def collect(*paths: Path) -> list[BugCase]:
    """The tests under `paths` (default tests/bugs) that carry a bug marker, read by
    a pytest collection (nothing runs)."""
    collector = _Collector()
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider",
                            "--rootdir", str(REPO), *map(str, paths or (BUGS,))],
                           plugins=[collector])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) or \
            collector.errors:
        raise LookupError("\n".join(collector.errors) or
                          f"collecting the bug cases failed:\n{quiet.getvalue()[-3000:]}")
    return list(collector.cases.values())


def find(name: str, cases: list[BugCase] | None = None) -> BugCase:
    """The bug case of tests/bugs/test_NAME.py (the module name without `test_`)."""
    cases = collect() if cases is None else cases
    wanted = name.removeprefix("test_").removesuffix(".py")
    found = [c for c in cases if c.name == wanted]
    if not found:
        raise LookupError(f"no bug case {name!r}; known: "
                          f"{', '.join(sorted({c.name for c in cases}))}")
    return found[0]

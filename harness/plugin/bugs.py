"""Reported bugs: `harness repro BUG` finds a bug reproduction by its short name and
reads, from its `bug` marker, which distros it affects; `judge` turns the failures a
distro exists to reproduce (catalog `reproduces`) into "reproduces <url>", not red."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from harness.catalog import KnownBug
from harness.paths import REPO

BUGS = REPO / "tests" / "bugs"


@dataclass(frozen=True)
class BugCase:
    path: Path
    function: str
    url: str
    affected: tuple[str, ...]
    fixed: tuple[str, ...]
    nearest: str = ""  # the closest upstream report, when the bug itself has none

    def node(self, distro: str) -> str:
        """The pytest node id of this case for one `bug_distro`."""
        return f"{self.path}::{self.function}[{distro}]"

    def link(self) -> str:
        return link(self.url, self.nearest)


def link(url: str, nearest: str = "") -> str:
    """The tracker link, or what is known instead: none, or the nearest report."""
    if url:
        return url
    return f"no tracker link; nearest report {nearest}" if nearest else "no tracker link"


def known() -> list[str]:
    return sorted(p.stem.removeprefix("test_") for p in BUGS.glob("test_*.py"))


def find(name: str) -> BugCase:
    """The bug case in tests/bugs/test_NAME.py (the module name without `test_`)."""
    path = BUGS / f"test_{name.removeprefix('test_').removesuffix('.py')}.py"
    if not path.is_file():
        raise LookupError(f"no bug case {name!r}; known: {', '.join(known())}")
    spec = importlib.util.spec_from_file_location(f"tests.bugs.{path.stem}", path,
                                                  submodule_search_locations=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "tests.bugs"
    spec.loader.exec_module(module)
    for attr, value in vars(module).items():
        for mark in getattr(value, "pytestmark", []):
            if mark.name == "bug":
                kw = mark.kwargs
                return BugCase(path, attr, kw.get("url", ""), tuple(kw.get("affected", ())),
                               tuple(kw.get("fixed", ())), kw.get("nearest", ""))
    raise LookupError(f"{path} has no test marked @pytest.mark.bug")


@dataclass(frozen=True)
class Verdict:
    """What a test's outcome means once the distro's known bugs are taken into account."""

    outcome: str  # "passed", "failed", "skipped" (pytest's words)
    reproduces: str = ""  # the tracker link, when the failure is the known bug
    message: str = ""  # why a known bug's test is red


def judge(bugs: tuple[KnownBug, ...], nodeid: str, outcome: str, text: str) -> Verdict:
    """A test one of `bugs` makes fail: its failure with the symptom reproduces the bug
    (not red); a failure without the symptom stays red; a pass is red too, since the
    bug no longer reproduces (fixed, or changed)."""
    test = nodeid.split("[", 1)[0]
    bug = next((b for b in bugs if any(test.endswith(t) for t in b.tests)), None)
    if bug is None or outcome == "skipped":
        return Verdict(outcome)
    if outcome == "failed":
        if bug.symptom in text:
            return Verdict("skipped", reproduces=bug.url)
        return Verdict("failed", message=f"failed, but not with the symptom of {bug.url} "
                                         f"({bug.symptom!r}): a different failure")
    return Verdict("failed", message=f"passed, but {bug.url} was expected to reproduce "
                                     f"({bug.symptom!r}): fixed or changed? update the "
                                     "catalog's `reproduces`")

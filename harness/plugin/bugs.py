"""`harness repro BUG`: find a bug reproduction by its short name and read, from its
`bug` marker, which distros it affects, so the CLI can boot exactly those."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from harness.paths import REPO

BUGS = REPO / "tests" / "bugs"


@dataclass(frozen=True)
class BugCase:
    path: Path
    function: str
    url: str
    affected: tuple[str, ...]
    fixed: tuple[str, ...]

    def node(self, distro: str) -> str:
        """The pytest node id of this case for one `bug_distro`."""
        return f"{self.path}::{self.function}[{distro}]"


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
                               tuple(kw.get("fixed", ())))
    raise LookupError(f"{path} has no test marked @pytest.mark.bug")

"""What the cluster suites share: the guests' own output, kept for the record."""

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.log import log
from harness.plugin import evidence


@pytest.fixture
def guest_output(request: pytest.FixtureRequest, distro) -> Callable[[str, str], str]:
    """`record(label, text)`: a guest's output as it printed it, in the log and in
    ARTIFACTS/<distro>/cluster/<test>/<label>.txt, kept whether the test passes or
    not (the claims of a cluster run are quoted from it)."""
    folder = Path(request.config.getoption("--artifacts")) / distro.name / "cluster" / \
        evidence.node_dir(request.node.nodeid)

    def record(label: str, text: str) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{label}.txt").write_text(text)
        log.info("%s:\n%s", label, text.rstrip())
        return text

    return record


@pytest.fixture(scope="module", autouse=True)
def _seed_of_the_module(request: pytest.FixtureRequest, distro) -> None:
    """A module whose member config is in one seed format (its SEED) runs only on the
    distros that read that format; elsewhere it is skipped before its cluster boots
    (an autouse fixture is set up before the module's `cluster`)."""
    seed = getattr(request.module, "SEED", None)
    if seed is not None and distro.boot.seed != seed:
        pytest.skip(f"{distro.name} reads {distro.boot.seed!r} first-boot configs; this "
                    f"module's member config is {seed!r}")

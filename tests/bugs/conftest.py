"""What bug reproductions share: booting the exact image a bug was reported
against, found and skipped by the session's own rules (harness.plugin: skipped
under --offline with the way to provide it, an error otherwise)."""

import pytest

from harness import catalog, plugin


@pytest.fixture
def boot_bug_distro(request, machine_factory, distro):
    """`boot_bug_distro(name)`: a machine of catalog entry `name` (the session's
    shared machine when it is that distro)."""
    def boot(name: str):
        if name == distro.name:
            shared = request.getfixturevalue("machine")
            plugin.watch_shared(request, shared)
            return shared
        return machine_factory(f"bug-{name}", distro=catalog.get(name))

    return boot

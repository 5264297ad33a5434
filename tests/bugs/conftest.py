"""What bug reproductions share: booting the exact image a bug was reported
against, or skipping with what is missing and how to provide it."""

import pytest

from harness import catalog, images, plugin
from harness.images import fetch


@pytest.fixture
def boot_bug_distro(request, machine_factory, distro):
    """`boot_bug_distro(name)`: a machine of catalog entry `name` (the session's
    shared machine when it is that distro); skips when its image cannot be had."""
    def boot(name: str):
        if name == distro.name:
            shared = request.getfixturevalue("machine")
            plugin.watch_shared(request, shared)
            return shared
        target = catalog.get(name)
        try:
            images.resolve(target, offline=request.config.getoption("--offline"))
        except images.ImageUnavailable as e:
            pytest.skip(str(e))
        except fetch.FetchError as e:
            pytest.skip(f"{name}: image could not be fetched ({e}); provide a copy with "
                        f"{images.env_var(target)}=PATH")
        return machine_factory(f"bug-{name}", distro=target)

    return boot


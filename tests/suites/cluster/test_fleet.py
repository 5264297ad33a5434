"""fleet, CoreOS's cluster scheduler over etcd. No catalog entry promises it: it
left Container Linux in 2018 and Debian never packaged it (the catalog's note),
so on refos this is skipped with that reason before any boot."""

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.promise("fleet"), pytest.mark.cluster(size=3)]


def test_fleet_lists_every_member(cluster):
    # Written for a distro that ships fleet and configures it; none does yet.
    listed = cluster.members[0].succeed("fleetctl list-machines --no-legend --fields=ip")
    assert set(listed.split()) == {cluster.address(m) for m in cluster.members}

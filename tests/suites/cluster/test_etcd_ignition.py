"""etcd on refos-ignition: Container Linux's etcd-member.service, written and enabled
per member by Ignition (harness.cluster_configs.etcd_ignition). The checks: etcd_checks.py."""

import pytest

from harness import cluster_configs
from tests.suites.cluster.etcd_checks import TESTS

SEED = "ignition"  # the config below is Ignition (conftest: _seed_of_the_module)
pytestmark = [pytest.mark.vm, pytest.mark.promise("etcd"),
              pytest.mark.cluster(size=3, config=cluster_configs.ETCD_BY_SEED[SEED])]

globals().update(TESTS)  # collected here, in etcd_checks.py's order

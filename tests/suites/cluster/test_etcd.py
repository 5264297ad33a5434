"""etcd on refos: Debian's etcd.service, configured per member by cloud-config
(harness.cluster_configs.etcd_cloud_config). The checks: etcd_checks.py."""

import pytest

from harness import cluster_configs
from tests.suites.cluster.etcd_checks import TESTS

SEED = "nocloud"  # the config below is cloud-config (conftest: _seed_of_the_module)
pytestmark = [pytest.mark.vm, pytest.mark.promise("etcd"),
              pytest.mark.cluster(size=3, config=cluster_configs.ETCD_BY_SEED[SEED])]

globals().update(TESTS)  # collected here, in etcd_checks.py's order

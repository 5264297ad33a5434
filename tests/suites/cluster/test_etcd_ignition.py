"""etcd on refos-ignition: Container Linux's etcd-member.service, written and enabled
per member by Ignition (harness.cluster_configs.etcd_ignition). The checks of how the
members are configured and agree: etcd_checks.py."""

import pytest

from harness import cluster_configs
from tests.suites.cluster.etcd_checks import TESTS

SEED = "ignition"  # the config below is Ignition (conftest: _seed_of_the_module)
pytestmark = [pytest.mark.vm, pytest.mark.promise("etcd"),
              pytest.mark.cluster(size=3, config=cluster_configs.ETCD_BY_SEED[SEED])]

# What Ignition changes is how each member is configured; how etcd keeps and loses
# its quorum is etcd's own, proven on refos (test_etcd.py): once per mechanism.
CONFIGURATION = ("test_each_member_runs_its_distros_etcd_unit_from_its_own_config",
                 "test_members_agree_on_membership_and_leader",
                 "test_a_key_written_on_one_member_reads_back_on_the_others")
globals().update({name: TESTS[name] for name in CONFIGURATION})  # in this order

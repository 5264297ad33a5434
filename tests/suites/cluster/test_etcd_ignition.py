"""etcd on refos-ignition: Container Linux's etcd-member.service, written and enabled
per member by Ignition (harness.cluster_configs.etcd_ignition). The checks: etcd_checks.py."""

import pytest

from harness import cluster_configs
from tests.suites.cluster.etcd_checks import (  # noqa: F401 - collected here
    test_a_key_written_on_one_member_reads_back_on_the_others,
    test_a_restarted_member_catches_up_with_the_keys_written_while_it_was_down,
    test_each_member_runs_its_distros_etcd_unit_from_its_own_config,
    test_members_agree_on_membership_and_leader,
    test_with_one_member_destroyed_writes_still_succeed,
    test_with_two_members_destroyed_a_write_fails_with_etcds_error,
)

SEED = "ignition"  # the config below is Ignition (conftest: _seed_of_the_module)
pytestmark = [pytest.mark.vm, pytest.mark.promise("etcd"),
              pytest.mark.cluster(size=3, config=cluster_configs.ETCD_BY_SEED[SEED])]

"""make bench's reboot figure: the time from the reboot request to the new boot's first
command, against cold boots of the same image taken in turn with the reboots, and the
watchdog's power cycles beside it. A stand-in machine, cold boot and clock (no VM: the
bench's arithmetic is what is proven here): each reboot advances the clock by a set
number of seconds, the guest's reset part way, then calls `settle` as Machine.reboot
does once the new boot id is seen."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import catalog
from harness.images import LocalImage
from harness.vm.machine import MachineSpec
from tools import bench


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(bench, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.fixture
def cold_boots(monkeypatch):
    """Cold boots that report the seconds given, in order; each records its turn."""
    took: list[float] = []
    order: list[str] = []

    def harness_boot(session, spec, name):
        order.append("cold")
        return SimpleNamespace(destroy=lambda: None), {"to_first_command_s": took.pop(0)}

    monkeypatch.setattr(bench, "harness_boot", harness_boot)
    return took, order


def _machine(clock: list[float], seconds: list[float], order: list[str],
             cycles: int = 0) -> SimpleNamespace:
    m = SimpleNamespace(power_cycles=cycles, restarts=0, restarted_at=0.0,
                        res=SimpleNamespace(domain=SimpleNamespace(suspend=lambda: None,
                                                                   resume=lambda: None)))

    def reboot(settle):
        order.append("reboot")
        took = seconds.pop(0)
        clock[0] += 10.0  # the guest's shutdown, up to its reset
        m.restarts, m.restarted_at = m.restarts + 1, clock[0]
        clock[0] += took - 10.0
        assert settle()
        clock[0] += 7.0  # the ready commands after the new boot answered: not counted

    m.reboot = reboot
    return m


def _spec() -> MachineSpec:
    return MachineSpec(catalog.get("refos"), LocalImage(Path("unused"), ""))


def test_reboot_figure_is_the_median_reboot_over_the_median_cold_boot_taken_in_turn(
        clock, cold_boots):
    took, order = cold_boots
    took.extend([100.0, 80.0, 150.0])
    got = bench.reboot_vs_cold(None, _spec(), _machine(clock, [90.0, 60.0, 75.0], order))
    assert order == ["reboot", "cold"] * 3
    assert got["reboots_s"] == [90.0, 60.0, 75.0]
    assert got["shutdown_s"] == [10.0] * 3
    assert got["ratio"] == round(75.0 / 100.0, 3)
    assert (got["power_cycles"], got["new_processes"]) == (0, 3)


def test_a_power_cycle_in_the_reboots_misses_its_target(clock, cold_boots):
    took, order = cold_boots
    took.extend([99.0] * 3)
    m = _machine(clock, [50.0] * 3, order, cycles=1)
    result = {"machine": {"cores": 2, "accel": "tcg", "distro": "refos"},
              "reboot": bench.reboot_vs_cold(None, _spec(), m)}
    lines = bench.table(result).splitlines()
    assert next(x for x in lines if "power cycles" in x).split()[-1] == "MISSED"
    assert next(x for x in lines if x.startswith("reboot / cold")).split()[-1] == "met"

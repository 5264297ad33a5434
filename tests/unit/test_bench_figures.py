"""make bench's reboot figure: the time from the reboot request to the new boot's first
command, against cold boots of the same image, and the watchdog's power cycles beside
it. A stand-in machine and clock (no VM: the bench's arithmetic is what is proven
here): each reboot advances the clock by a set number of seconds, then calls `settle`
as Machine.reboot does once the new boot id is seen."""

from types import SimpleNamespace

import pytest

from tools import bench


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(bench, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def _machine(clock: list[float], seconds: list[float], cycles: int = 0) -> SimpleNamespace:
    def reboot(settle):
        clock[0] += seconds.pop(0)
        assert settle()
        clock[0] += 7.0  # the ready commands after the new boot answered: not counted

    return SimpleNamespace(reboot=reboot, power_cycles=cycles)


def test_reboot_figure_is_the_median_reboot_over_the_median_cold_boot(clock):
    got = bench.reboot_vs_cold(_machine(clock, [90.0, 60.0, 75.0]), cold_s=[100.0, 80.0, 150.0])
    assert got["reboots_s"] == [90.0, 60.0, 75.0]
    assert got["ratio"] == round(75.0 / 100.0, 3)
    assert got["power_cycles"] == 0


def test_a_power_cycle_in_the_reboots_misses_its_target(clock):
    result = {"machine": {"cores": 2, "accel": "tcg", "distro": "refos"},
              "reboot": bench.reboot_vs_cold(_machine(clock, [50.0] * 3, cycles=1), [99.0] * 3)}
    lines = bench.table(result).splitlines()
    assert next(x for x in lines if "power cycles" in x).split()[-1] == "MISSED"
    assert next(x for x in lines if x.startswith("reboot / cold")).split()[-1] == "met"

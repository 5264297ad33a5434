"""pytest-testinfra over the harness's own SSH connection, so suite authors can use
testinfra's vocabulary of host checks (`host.service`, `host.mount_point`, ...)
against a booted machine without a second connection or its own host-key rules."""

from typing import Any

import testinfra.backend.base
import testinfra.host


class MachineBackend(testinfra.backend.base.BaseBackend):
    """A testinfra backend whose every command goes through `machine.run`
    (already root, already host-key checked)."""

    NAME = "harness"

    def __init__(self, machine, *args: Any, **kwargs: Any):
        self.machine = machine
        super().__init__(getattr(machine, "name", "machine"), *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any
            ) -> testinfra.backend.base.CommandResult:
        cmd = self.get_command(command, *args)
        result = self.machine.run(cmd)
        return self.result(result.status, self.encode(cmd), result.stdout, result.stderr)


def host_for(machine) -> testinfra.host.Host:
    """A testinfra Host for `machine`."""
    backend = MachineBackend(machine)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host

"""A run that holds a cluster switch and nothing else, for test_cluster_switch_sweep.

    python hold_a_switch.py [--leak]

Starts a real run (owner record in its folder and in the pool) and a real
vde_switch in it (harness.vm.network.Switch), prints one JSON line (run folder,
switch pid, socket folder) and sleeps until killed. --leak also starts a child
that holds the switch's stdin pipe open and outlives this process: a switch that
survives its run, as when a child of the harness inherited the pipe (a fault
injected here; the harness's own pipe is not inheritable).
"""

import json
import os
import subprocess
import sys
import time

import libvirt

from harness.vm import network, runs


def main() -> None:
    conn = libvirt.open("qemu:///system")
    run = runs.Run.start(conn)
    switch = network.Switch.start(run.dir, "c0", network.qemu_group(conn))
    leak = None
    if "--leak" in sys.argv:
        fd = os.dup(switch._stdin_w)  # inheritable: the fault
        leak = subprocess.Popen(["sleep", "600"], pass_fds=(fd,), start_new_session=True)
        os.close(fd)
    print(json.dumps({"run_dir": str(run.dir), "pid": switch.proc.pid,
                      "dir": str(switch.dir), "leak": leak.pid if leak else None}),
          flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()

"""Fetch throughput against curl, all reading the same file from a local server.

For `make bench`: `compare_with_curl()` serves a file of random bytes on
127.0.0.1 and times, round after round so that load from elsewhere falls on
all of them alike:

- `harness.images.fetch` (hashing as it streams, writing into a fresh cache);
- `curl -o` alone;
- `curl -o` followed by `sha256sum`, which is what a user of curl does to get
  the verified file the harness ends with.

The server (tools/localserver.py) runs in a process of its own: in the
fetcher's process its Python threads would take the interpreter lock from the
fetcher, a cost curl, in another process, never pays.
"""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.images import fetch
from harness.paths import REPO

SERVE = ("import sys\nfrom pathlib import Path\nfrom tools.localserver import LocalServer\n"
         "with LocalServer() as s:\n"
         "    print(s.add('/image.raw', Path(sys.argv[1])), flush=True)\n"
         "    sys.stdin.read()\n")


@contextmanager
def served(data: Path) -> Iterator[tuple[str, int]]:
    """The URL of `data` on a LocalServer in a child process, stopped on exit, and
    that process's id."""
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(data)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip(), proc.pid
    finally:
        proc.stdin.close()  # the server ends when its stdin does
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its pid
            proc.wait()


def compare_with_curl(size_mib: int = 256, rounds: int = 5) -> dict:
    """Seconds for each way (best and median of `rounds`), its median CPU-seconds
    (`cpu_s`, all three ways in one line), and the throughput ratios harness / curl
    and harness / (curl + sha256sum), from the best times."""
    with tempfile.TemporaryDirectory(prefix="fetchbench-") as tmp:
        work = Path(tmp)
        data = work / "image.raw"
        with open(data, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(2**20))
        digest = fetch.file_digest(data)
        with served(data) as (url, server):
            source = fetch.Source((url,), digest)
            ways: dict[str, Callable[[], float]] = {
                "harness": lambda: _time_fetch(source, work / "cache"),
                "curl": lambda: _time_curl(url, work / "curl.out", hash_after=False),
                "curl_sha256sum": lambda: _time_curl(url, work / "curl.out", hash_after=True),
            }
            times: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(rounds):
                for name, way in ways.items():
                    before = _cpu_s(server)
                    times[name].append(way())
                    cpu[name].append(_cpu_s(server) - before)
    out: dict = {"size_mib": size_mib, "rounds": rounds}
    for name, values in times.items():
        out[f"{name}_best_s"] = round(min(values), 3)
        out[f"{name}_median_s"] = round(statistics.median(values), 3)
        out[f"{name}_cpu_s"] = round(statistics.median(cpu[name]), 3)
    out["cpu_s"] = " / ".join(f"{out[f'{name}_cpu_s']:.2f}" for name in ways)
    out["harness_mib_s"] = round(size_mib / min(times["harness"]), 1)
    out["curl_mib_s"] = round(size_mib / min(times["curl"]), 1)
    out["ratio_to_curl"] = round(min(times["curl"]) / min(times["harness"]), 2)
    out["ratio_to_curl_sha256sum"] = round(min(times["curl_sha256sum"])
                                           / min(times["harness"]), 2)
    return out


def _cpu_s(server: int) -> float:
    """CPU seconds so far of this process (the fetcher and its hash thread), its
    waited-for children (curl, sha256sum) and the server: on two cores, whatever one
    way spends more than another is wall time once both cores are busy."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    fields = Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()
    server_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + server_s


def _time_fetch(source: fetch.Source, cache: Path) -> float:
    start = time.monotonic()
    fetch.fetch(source, cache=cache, label="bench")
    elapsed = time.monotonic() - start
    shutil.rmtree(cache)
    return elapsed


def _time_curl(url: str, out: Path, hash_after: bool) -> float:
    start = time.monotonic()
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
    if hash_after:
        subprocess.run(["sha256sum", str(out)], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    out.unlink()
    return elapsed


if __name__ == "__main__":
    print(compare_with_curl())

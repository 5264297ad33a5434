"""Fetch throughput against curl, both reading the same file from a local server.

For `make bench`: `compare_with_curl()` serves a file of random bytes on
127.0.0.1 and times `harness.images.fetch` (hashing as it streams, writing into a
fresh cache) and `curl -o` on it, best of `runs`.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.images import fetch
from tools.localserver import LocalServer


def compare_with_curl(size_mib: int = 256, runs: int = 3) -> dict:
    """Seconds and MiB/s for each tool, best of `runs`."""
    with tempfile.TemporaryDirectory(prefix="fetchbench-") as tmp, LocalServer() as server:
        data = Path(tmp) / "image.raw"
        with open(data, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(2**20))
        url = server.add("/image.raw", data)
        source = fetch.Source((url,), fetch.file_digest(data))
        harness_s = min(_time_fetch(source, Path(tmp) / f"cache{i}") for i in range(runs))
        curl_s = min(_time_curl(url, Path(tmp) / "curl.out") for _ in range(runs))
    return {"size_mib": size_mib,
            "harness_seconds": round(harness_s, 3), "curl_seconds": round(curl_s, 3),
            "harness_mib_s": round(size_mib / harness_s, 1),
            "curl_mib_s": round(size_mib / curl_s, 1)}


def _time_fetch(source: fetch.Source, cache: Path) -> float:
    start = time.monotonic()
    fetch.fetch(source, cache=cache, label="bench")
    elapsed = time.monotonic() - start
    shutil.rmtree(cache)
    return elapsed


def _time_curl(url: str, out: Path) -> float:
    start = time.monotonic()
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
    elapsed = time.monotonic() - start
    out.unlink()
    return elapsed


if __name__ == "__main__":
    print(compare_with_curl())

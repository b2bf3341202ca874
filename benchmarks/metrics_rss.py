"""Peak memory of `maf metrics serve` after many scrapes.

Run:  python benchmarks/metrics_rss.py [--scrapes 10000]

Starts `maf metrics serve --port 0` on loopback against a store with some
content, scrapes /metrics --scrapes times, and reads the server's peak
resident set size (VmHWM, Linux) after 100 scrapes and at the end, so growth
per scrape shows beside the starting size (target: under 100 MB, the
operations guide's KPI).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pytest_maf import reservations, tasks
from pytest_maf.store import open_store


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scrapes", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maf-rss-") as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        db = root / ".maf" / "runtime.db"
        with open_store(db, create=True) as store:
            for n in range(500):
                tasks.add_task(store)
            for n in range(50):
                reservations.acquire(store, [f"src/m{n}/**"], f"agent-{n}", 3_600_000)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAF_")}
        server = subprocess.Popen(
            [sys.executable, "-m", "pytest_maf", "metrics", "serve", "--port", "0"],
            cwd=root, stdout=subprocess.PIPE, text=True, env=env,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[-1]
            started = time.perf_counter()
            after_100 = 0.0
            for scrape in range(1, args.scrapes + 1):
                urllib.request.urlopen(url, timeout=10).read()
                if scrape == 100:
                    after_100 = peak_rss_mb(server.pid)
            elapsed = time.perf_counter() - started
            final = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait()
    json.dump({
        "scrapes": args.scrapes,
        "peak_rss_mb_after_100": after_100,
        "peak_rss_mb_at_end": final,
        "growth_mb": round(final - after_100, 1),
        "scrapes_per_s": round(args.scrapes / elapsed, 1),
        "target_mb": 100,
    }, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

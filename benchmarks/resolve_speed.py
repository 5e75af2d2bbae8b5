"""Speed of `siteserver.resolve`, the one authority on URL-to-file mapping: the site server calls
it per request and the structure stage per link, so it must stay far below a millisecond.

    python benchmarks/resolve_speed.py [--calls 20000]

Times resolve on a generated site for a served file, a directory index, a 404 and a refused
escape (a symlink out of the root), and prints microseconds per call for each and the worst
against the goal (< 1000 us per call; it was a wall-clock assertion in the unit tests before).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from vlmagent.web.sitegen import write_site
from vlmagent.web.siteserver import resolve

GOAL_US = 1000.0
PATHS = {"file": "/docs/index.html", "dir_index": "/docs/", "missing": "/img/nope.png",
         "escape": "/secret.txt"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_site(Path(tmp) / "site", {"index.html": "<p>home</p>",
                                               "docs/index.html": "<p>docs</p>",
                                               "img/logo.png": b"\x89PNG\r\n\x1a\n"})
        os.symlink("/etc/passwd", root / "secret.txt")
        us = {}
        for name, path in PATHS.items():
            resolve(root, path)  # warm the file-system caches
            t = time.perf_counter()
            for _ in range(args.calls):
                resolve(root, path)
            us[name] = round((time.perf_counter() - t) / args.calls * 1e6, 2)
    worst = max(us.values())
    print(json.dumps({"calls": args.calls, "us_per_call": us, "worst_us": worst}))
    print(f"resolve: worst {worst:.1f} us per call (goal < {GOAL_US:.0f} us): "
          f"{'ok' if worst < GOAL_US else 'SLOW'}")


if __name__ == "__main__":
    main()

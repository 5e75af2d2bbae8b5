"""Throughput of `vlmagent score` against a naive baseline, on the same generated sites.

    python benchmarks/score_throughput.py [--sites 30] [--workers 2] [--seed 0]

vlmagent: N worker processes, each with one long-lived browser and a fresh context per site.
Baseline: one process, sequential, a new browser launched for every site (the naive loop).
Both run the same cascade with the same config. Prints both rates (sites/s), their ratio, and
the largest per-site reward difference (the two must agree: same checks, same sites).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vlmagent.config import Config
from vlmagent.rewards import SiteContext, build_cascade
from vlmagent.scoring.sites import score
from vlmagent.web.browser import Browser
from vlmagent.web.sitegen import generate_sites


def naive(sites: list[Path], cfg: Config, shots: Path) -> dict[str, float]:
    rewards = {}
    for s in sites:
        with Browser(cfg.browser) as browser:
            cascade = build_cascade(cfg, browser)
            site = SiteContext.from_dir(s, artifacts=shots / s.name, link_base=shots)
            rewards[s.name] = cascade(site).reward
    return rewards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = Config()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sites = generate_sites(tmp / "sites", args.sites, seed=args.seed)
        t0 = time.perf_counter()
        summary = score([tmp / "sites"], tmp / "results.jsonl", cfg, workers=args.workers,
                        progress=False)
        ours_s = time.perf_counter() - t0
        ours = {d["site"]: d["reward"] for d in summary.lines}
        t0 = time.perf_counter()
        base = naive(sites, cfg, tmp / "naive")
        base_s = time.perf_counter() - t0
    diff = max(abs(ours[k] - base[k]) for k in base)
    n = len(sites)
    print(json.dumps({"sites": n, "workers": args.workers,
                      "vlmagent_sites_per_s": round(n / ours_s, 3),
                      "naive_sites_per_s": round(n / base_s, 3),
                      "ratio": round(base_s / ours_s, 3),
                      "max_reward_diff": round(diff, 4),
                      "mean_reward": round(sum(ours.values()) / n, 4)}))
    print(f"vlmagent score: {n / ours_s:.2f} sites/s ({ours_s:.1f} s, {args.workers} workers)")
    print(f"naive baseline: {n / base_s:.2f} sites/s ({base_s:.1f} s, "
          "browser per site, sequential)")
    print(f"ratio: {base_s / ours_s:.2f}x   (goal on 2 cores: >= 1.5x)")


if __name__ == "__main__":
    main()

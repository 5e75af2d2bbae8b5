"""`vlmagent seeds`: run one recipe for several seeds and report each stage over the seeds.

A learning result is a claim about a recipe, not about one seed. Each seed is a full
`vlmagent train` run in its own process (OUT/seed-S/, train.seed=S; with --tiny, a tiny model
with init seed S is built for it too), so a rerun skips finished seeds and resumes an
interrupted one where it stopped. The report gives, per stage and domain, every held-out metric's
mean, min, max, standard deviation and 95% confidence interval of the mean (Student t) over the
seeds, and the wall time of each seed:

    OUT/seeds.json   {"config", "seeds", "time_s": {seed: s}, "stages": {stage: {domain: {metric:
                      {"n", "mean", "min", "max", "std", "ci95": [lo, hi], "values": [...]}}}}}
    OUT/seeds.md     the same as a Markdown table (the README's learning numbers come from it)
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Student t 97.5% quantiles by degrees of freedom (two-sided 95% interval); beyond 30, normal.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
        17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}
# in the table when a domain reports them (webgen: WebGen-R1's three); the JSON has all
METRICS = ("accuracy", "reward", "tool_call_rate", "functional_success_rate",
           "valid_render_ratio", "aesthetic_score", "steps")


def parse_seeds(text: str) -> list[int]:
    """"0-4" -> [0, 1, 2, 3, 4]; "0,2,7" -> [0, 2, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: give distinct seeds, e.g. 0-4 or 0,1,5")
    return seeds


def stats(values: list[float]) -> dict[str, Any]:
    """n, mean, min, max, sample std and the 95% t interval of the mean."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = float("nan")
    if n > 1:  # between table entries the smaller df is used: a slightly wider interval
        df = n - 1
        t = T975[max(k for k in T975 if k <= df)] if df <= 30 else 1.960
        half = t * std / math.sqrt(n)
    return {"n": n, "mean": mean, "min": min(values), "max": max(values), "std": std,
            "ci95": [mean - half, mean + half], "values": values}


def aggregate(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """{seed: {stage: {domain: {metric: value}}}} -> {stage: {domain: {metric: stats}}}, for
    the stages and metrics every seed has (in the first seed's stage order)."""
    first = next(iter(runs.values()))
    out: dict[str, Any] = {}
    for stage, per_domain in first.items():
        for dom, metrics in per_domain.items():
            for m, v in metrics.items():
                vals = [r.get(stage, {}).get(dom, {}).get(m) for r in runs.values()]
                if isinstance(v, (int, float)) and all(isinstance(x, (int, float)) for x in vals):
                    out.setdefault(stage, {}).setdefault(dom, {})[m] = stats(
                        [float(x) for x in vals])
    return out


def table(report: dict[str, Any]) -> str:
    """Markdown: one row per (stage, domain, metric) with mean, min, max, 95% CI, per seed."""
    seeds = report["seeds"]
    head = ("| stage | domain | metric | mean | min | max | 95% CI | "
            + " | ".join(f"seed {s}" for s in seeds) + " |")
    rows = [head, "|" + "---|" * (7 + len(seeds))]
    for stage, per_domain in report["stages"].items():
        for dom, metrics in per_domain.items():
            for m in METRICS:
                if m not in metrics:
                    continue
                s = metrics[m]
                lo, hi = s["ci95"]
                f = ".0f" if m == "steps" else ".3f"
                rows.append(f"| {stage} | {dom} | {m} | {s['mean']:{f}} | {s['min']:{f}} | "
                            f"{s['max']:{f}} | {lo:{f}} to {hi:{f}} | "
                            + " | ".join(f"{v:{f}}" for v in s["values"]) + " |")
    times = ", ".join(f"seed {k}: {v / 60:.1f} min" for k, v in report["time_s"].items())
    return "\n".join(rows) + f"\n\nWall time per seed: {times}\n"


def _stage_results(run_dir: Path, stages: list[str]) -> dict[str, Any] | None:
    """Every stage's eval.json of a finished run, or None if a stage is missing."""
    out = {}
    for name in stages:
        f = run_dir / name / "eval.json"
        if not (run_dir / name / "final" / "DONE").exists() or not f.exists():
            return None
        out[name] = json.loads(f.read_text())
    return out


def run_seeds(config: str, seeds: list[int], out: str | Path, overrides: list[str],
              tiny_family: str | None = None, jobs: int = 1, tiny_corpus: str = "base"
              ) -> dict[str, Any]:
    """Train `config` once per seed (in `jobs` parallel processes), then aggregate."""
    from vlmagent import config as config_mod
    from vlmagent.train.pipeline import resolve_stages

    cfg = config_mod.load(config, overrides)  # fails here, naming the key, before any run
    stages = [s.name for s in resolve_stages(cfg)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times_file = out / "time_s.json"
    times: dict[str, float] = json.loads(times_file.read_text()) if times_file.exists() else {}
    todo = [s for s in seeds if _stage_results(out / f"seed-{s}", stages) is None]
    running: dict[int, tuple[subprocess.Popen, float]] = {}  # the log file closes with the run
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if jobs > 1:  # share the cores: torch's default (every core per process) oversubscribes them
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    while todo or running:
        while todo and len(running) < jobs:
            s = todo.pop(0)
            running[s] = (_launch(config, s, out, overrides, tiny_family, env, tiny_corpus),
                          time.time())
            print(f"[seeds] seed {s}: started (log: {out}/seed-{s}.log)", flush=True)
        time.sleep(1.0)
        for s, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[s]
            proc.stdout_log.close()  # type: ignore[attr-defined]
            if proc.returncode != 0:
                raise RuntimeError(f"seed {s} failed (exit {proc.returncode}); see "
                                   f"{out}/seed-{s}.log")
            # a seed resumed over several runs: its time is the sum of the runs
            times[str(s)] = round(times.get(str(s), 0.0) + time.time() - t0, 1)
            times_file.write_text(json.dumps(times))
            print(f"[seeds] seed {s}: done in {times[str(s)] / 60:.1f} min", flush=True)
    runs = {s: _stage_results(out / f"seed-{s}", stages) for s in seeds}
    report = {"config": str(config), "overrides": overrides, "seeds": seeds,
              "tiny_family": tiny_family,
              "time_s": {str(s): times.get(str(s)) for s in seeds if str(s) in times},
              "stages": aggregate(runs)}  # type: ignore[arg-type]
    (out / "seeds.json").write_text(json.dumps(report, indent=1))
    (out / "seeds.md").write_text(table(report))
    return report


def _launch(config: str, seed: int, out: Path, overrides: list[str], tiny_family: str | None,
            env: dict[str, str], corpus: str = "base") -> subprocess.Popen:
    run_dir = out / f"seed-{seed}"
    args = [f"train.seed={seed}", f"train.output_dir={run_dir}"]
    if tiny_family:  # the tiny model's init seed follows the training seed
        tag = "" if corpus == "base" else f"-{corpus}"
        model = out / "models" / f"{tiny_family}-seed{seed}{tag}"
        if not (model / "config.json").exists():
            from vlmagent.tiny import build_tiny
            build_tiny(model, family=tiny_family, seed=seed, corpus=corpus)
        args.append(f"policy.path={model}")
    cmd = [sys.executable, "-m", "vlmagent.cli", "train", config, *overrides, *args]
    log = open(out / f"seed-{seed}.log", "a")  # noqa: SIM115 (closed when the run ends)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.stdout_log = log  # type: ignore[attr-defined]
    return proc

"""`vlmagent score PATH...`: score folders of websites with the reward cascade, one JSON line per
site.

A PATH is a site or a folder of sites (discover); each site is hashed (its content hash) and
becomes a job for the runner (runner.py: worker pool, hard per-site timeouts, resume, report).
Sites with the same bytes are scored once; `--resume` keeps the line of every site whose path
and bytes are unchanged.
"""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from vlmagent.config import Config
from vlmagent.errors import UsageError
from vlmagent.rewards.cascade import site_hash
from vlmagent.scoring.runner import Job, Summary, run_jobs

HTML_EXT = (".html", ".htm")


# ---------------------------------------------------------------- discovery
def _is_site(p: Path) -> bool:
    return (p / "index.html").exists() or (p / "index.html").is_symlink() or any(
        c.suffix.lower() in HTML_EXT for c in p.iterdir() if not c.is_dir())


def discover(paths: list[str | Path]) -> list[Job]:
    """A PATH is one site (it holds html files) or a folder whose subfolders are sites."""
    jobs: list[Job] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UsageError(f"no such path: {raw}")
        if not p.is_dir():
            raise UsageError(f"not a folder: {raw} (give a site folder or a folder of sites)")
        subdirs = sorted(c for c in p.iterdir() if c.is_dir() and not c.is_symlink()
                         and not c.name.startswith("."))
        if _is_site(p) or not subdirs:
            jobs.append(Job(p.resolve().name or str(p), p))
        else:
            jobs += [Job(c.name, c) for c in subdirs]
    seen: dict[str, int] = {}
    for j in jobs:  # unique names, stable: a second "x" becomes "x-2"
        n = seen.get(j.name, 0) + 1
        seen[j.name] = n
        if n > 1:
            j.name = f"{j.name}-{n}"
    return jobs


# ---------------------------------------------------------------- the command
def score(paths: list[str | Path], out: str | Path, cfg: Config | None = None,
          workers: int | None = None, resume: bool = False, report: str | Path | None = None,
          progress: bool = True) -> Summary:
    """Score every site under `paths` into `out` (one line each); `resume` keeps the lines of
    sites whose path and bytes are unchanged."""
    cfg = cfg or Config()
    t0 = time.monotonic()
    jobs = discover(paths)
    for j in tqdm(jobs, desc="hashing", unit="site", disable=not progress or len(jobs) < 50):
        j.content_hash = site_hash(j.path)
    return run_jobs(jobs, out, cfg, resume_by="content", resume=resume, workers=workers,
                    report=report, progress=progress, unit="site", started=t0)

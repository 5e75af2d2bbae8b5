"""The job runner behind `vlmagent score`: jobs in, results.jsonl (one line per job) and a report
out. Site folders (sites.py) and model responses (responses.py) only make the jobs.

Shape: the parent process goes through the jobs in order. A job already in the results file
(`--resume`) keeps its line; a job with a precomputed line (a rejected response) gets it at once;
the rest are grouped by content hash, and each hash is submitted once to a RewardPool (pool.py:
N worker processes, each with one browser and one Cascade; or, with score.backend: ray, N Ray
actors doing the same, ray_backend.py: the lines are the same). A worker that exceeds the hard
per-site wall time (score.site_timeout_s, counted from when the worker is up; starting a worker
and its browser has a limit of the same length), or dies, is killed with its whole process group
(its Chromium included) and replaced; the site still gets a line, with `error` set. Every job
sharing the hash gets a line from that one result. Lines are appended and flushed as sites
finish, so a killed run loses only the sites in flight and `--resume` picks up from the file.

Resume keys (`resume_by`):
  "content"  a line is kept for the job with the same path and content hash; a job whose bytes an
             earlier line scored under another path gets a copy of that line (a duplicate);
  "id"       a line is kept for the job with the same id (the line's "id" field); nothing else is
             reused, since a line may carry per-job details (the `decorate` hook).
"""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlmagent.config import Config
from vlmagent.scoring.backends import check_backend, open_pool

RESUME_BY = ("content", "id")


@dataclass
class Job:
    """One result line to be: a folder to score, or a line known without scoring."""

    name: str  # unique in the run: the line's "site" (the site name, or the response id)
    path: Path | None = None  # the folder scored; None: no folder (`line` is the result)
    content_hash: str = ""  # jobs with the same hash are scored once
    line: dict[str, Any] | None = None  # a precomputed result line, written as it is
    fields: dict[str, Any] = field(default_factory=dict)  # added to each of its lines ("id")


@dataclass
class Summary:
    sites: int
    scored: int  # scored in this run (not resumed, not duplicates)
    resumed: int
    duplicates: int
    errors: list[tuple[str, str]]
    mean_reward: float
    stage_pass: dict[str, tuple[int, int]]  # stage -> (passed, ran)
    slowest: list[tuple[str, float]]
    seconds: float
    lines: list[dict[str, Any]] = field(default_factory=list)


def result_line(job: Job, result: dict[str, Any] | None, error: str | None,
                seconds: float) -> dict[str, Any]:
    """The results.jsonl line of `job` from a RewardResult dict (None: reward 0, no stages)."""
    r = result or {"reward": 0.0, "stages": []}
    err = error or r.get("error")
    return {"site": job.name, "path": "" if job.path is None else str(job.path),
            "content_hash": job.content_hash, "reward": float(r["reward"]),
            "stages": r["stages"], "error": err, "seconds": round(seconds, 3), **job.fields}


# ---------------------------------------------------------------- results file
def read_lines(out: Path) -> list[dict[str, Any]]:
    """Existing lines; a partial last line (the run was killed mid-write) is cut off the file."""
    if not out.exists():
        return []
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(out, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    lines = []
    for raw in data.splitlines():
        try:
            d = json.loads(raw)
        except ValueError:
            continue
        if isinstance(d, dict) and "content_hash" in d and "path" in d:
            lines.append(d)
    return lines


def _job_key(job: Job, resume_by: str) -> Hashable:
    return (str(job.path), job.content_hash) if resume_by == "content" else job.name


def _line_key(d: dict[str, Any], resume_by: str) -> Hashable | None:
    return (d["path"], d["content_hash"]) if resume_by == "content" else d.get("id")


# ---------------------------------------------------------------- the run
def run_jobs(jobs: Sequence[Job], out: str | Path, cfg: Config, *, resume_by: str = "content",
             resume: bool = False, workers: int | None = None,
             report: str | Path | None = None, progress: bool = True,
             prepare: Callable[[Job], None] | None = None, prepare_desc: str = "preparing",
             decorate: Callable[[Job, dict[str, Any]], dict[str, Any]] | None = None,
             unit: str = "site", started: float | None = None) -> Summary:
    """Score `jobs` into `out` (truncated, or resumed from), then summarise and report.

    prepare(job): called, in order, for each job that is not resumed, before it is grouped by
      content hash; it sets the job's path and content_hash, or its line (responses: parse and
      materialise). Jobs whose key needs the hash (resume_by="content") come hashed.
    decorate(job, line) -> line: for each line made from a scoring result (not for precomputed
      or resumed lines); gets a line whose stages are its own copy.
    started: time.monotonic() at the start of the command (the summary's seconds count from it).
    """
    if resume_by not in RESUME_BY:
        raise ValueError(f"resume_by must be one of {RESUME_BY}, not {resume_by!r}")
    t0 = time.monotonic() if started is None else started
    check_backend(cfg)  # a bad score.backend fails before the results file is touched
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    artifacts_root = out.parent / f"{out.stem}.artifacts"
    old = read_lines(out) if resume else []
    if not resume:
        out.write_bytes(b"")
    done = {_line_key(d, resume_by): d for d in old}
    done.pop(None, None)  # lines without the key ("id") are never reused
    by_hash = {d["content_hash"]: d for d in old} if resume_by == "content" else {}

    final: dict[str, dict[str, Any]] = {}  # job name -> its line
    todo: dict[str, list[Job]] = {}  # content hash -> jobs sharing it (scored once)
    resumed = duplicates = 0
    with open(out, "a", encoding="utf-8") as f:
        def emit(line: dict[str, Any]) -> None:
            f.write(json.dumps(line) + "\n")
            f.flush()  # flushed per line: a SIGKILL loses only sites in flight
            final[line["site"]] = line

        for job in tqdm(jobs, desc=prepare_desc, unit=unit,
                        disable=not progress or prepare is None or len(jobs) < 50):
            key = _job_key(job, resume_by)
            if key in done:
                final[job.name] = {**done[key], "site": job.name}
                resumed += 1
                continue
            if prepare is not None:
                prepare(job)
            if job.line is not None:
                emit({**job.line, "site": job.name})
            elif job.content_hash in by_hash:  # same bytes scored before under another path
                prev = by_hash[job.content_hash]
                emit(result_line(job, prev, prev.get("error"), prev.get("seconds", 0.0)))
                duplicates += 1
            else:
                todo.setdefault(job.content_hash, []).append(job)
        bar = tqdm(total=len(jobs), initial=len(final), desc="scoring", unit=unit,
                   disable=not progress, mininterval=0.5)
        if todo:
            n_workers = max(1, min(workers or cfg.score.workers, len(todo)))
            # Keyed by the first job's name (the pool logs it); the jobs sharing its hash are
            # fanned out here, so their lines stay together and in order.
            with open_pool(cfg, n_workers, artifacts_root, out.parent) as pool:
                for group in todo.values():
                    assert group[0].path is not None
                    pool.submit(group[0].name, group[0].path, group[0].content_hash)
                left = len(todo)
                while left:
                    for d in pool.poll(timeout=3600.0):
                        left -= 1
                        for k, job in enumerate(todo[d.content_hash]):
                            line = result_line(job, d.result, d.error, d.seconds)
                            if decorate is not None:
                                line = decorate(job, {**line,
                                                      "stages": copy.deepcopy(line["stages"])})
                            emit(line)
                            duplicates += k > 0  # the same bytes twice: scored once
                            bar.update(1)
        bar.close()

    lines = [final[j.name] for j in jobs if j.name in final]
    summary = summarize(lines, cfg, time.monotonic() - t0, resumed, duplicates)
    if report:
        from vlmagent.scoring.report import write_report
        write_report(lines, Path(report), summary, results_dir=out.parent)
    return summary


# ---------------------------------------------------------------- summary
def summarize(lines: list[dict[str, Any]], cfg: Config, seconds: float, resumed: int = 0,
              duplicates: int = 0) -> Summary:
    stage_pass: dict[str, tuple[int, int]] = {s: (0, 0) for s in cfg.reward.stages}
    for d in lines:
        for s in d["stages"]:
            p, r = stage_pass.get(s["name"], (0, 0))
            stage_pass[s["name"]] = (p + bool(s["passed"]), r + 1)
    rewards = [d["reward"] for d in lines]
    slow = sorted(((d["site"], d["seconds"]) for d in lines), key=lambda x: -x[1])
    return Summary(
        sites=len(lines), scored=len(lines) - resumed - duplicates, resumed=resumed,
        duplicates=duplicates, errors=[(d["site"], d["error"]) for d in lines if d["error"]],
        mean_reward=sum(rewards) / len(rewards) if rewards else 0.0, stage_pass=stage_pass,
        slowest=slow[:cfg.score.slowest], seconds=seconds, lines=lines)


def format_summary(s: Summary) -> str:
    n = s.sites
    out = [f"{n} sites in {s.seconds:.1f} s ({s.scored} scored, {s.resumed} resumed, "
           f"{s.duplicates} duplicate content); mean reward {s.mean_reward:.3f}"]
    for name, (p, r) in s.stage_pass.items():
        pct = 100 * p / n if n else 0.0
        out.append(f"  {name:<12} passed {p}/{n} ({pct:.0f}%), ran on {r}")
    if s.errors:
        out.append(f"  errors: {len(s.errors)}")
        out += [f"    {site}: {err}" for site, err in s.errors[:10]]
    if s.slowest:
        out.append("  slowest: " + ", ".join(f"{site} {sec:.1f}s" for site, sec in s.slowest))
    return "\n".join(out)

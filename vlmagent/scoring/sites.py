"""`vlmagent score`: score folders of websites with the reward cascade, one JSON line per site.

Shape: the parent process discovers sites, hashes them, and hands them one at a time to N
worker processes; each worker owns one browser (a fresh context per site) and one Cascade.
A worker that exceeds the hard per-site wall time, or dies, is killed with its whole process
group (its Chromium included) and replaced; the site still gets a line, with `error` set.
Lines are appended and flushed as sites finish, so a killed run loses only the sites in flight
and `--resume` picks up from the file.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlmagent.config import Config, from_dict, to_dict
from vlmagent.errors import UsageError
from vlmagent.rewards.cascade import site_hash

log = logging.getLogger("vlmagent.score")
HTML_EXT = (".html", ".htm")


@dataclass
class SiteJob:
    name: str
    path: Path
    content_hash: str = ""


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


# ---------------------------------------------------------------- discovery
def _is_site(p: Path) -> bool:
    return (p / "index.html").exists() or (p / "index.html").is_symlink() or any(
        c.suffix.lower() in HTML_EXT for c in p.iterdir() if not c.is_dir())


def discover(paths: list[str | Path]) -> list[SiteJob]:
    """A PATH is one site (it holds html files) or a folder whose subfolders are sites."""
    jobs: list[SiteJob] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UsageError(f"no such path: {raw}")
        if not p.is_dir():
            raise UsageError(f"not a folder: {raw} (give a site folder or a folder of sites)")
        subdirs = sorted(c for c in p.iterdir() if c.is_dir() and not c.is_symlink()
                         and not c.name.startswith("."))
        if _is_site(p) or not subdirs:
            jobs.append(SiteJob(p.resolve().name or str(p), p))
        else:
            jobs += [SiteJob(c.name, c) for c in subdirs]
    seen: dict[str, int] = {}
    for j in jobs:  # unique names, stable: a second "x" becomes "x-2"
        n = seen.get(j.name, 0) + 1
        seen[j.name] = n
        if n > 1:
            j.name = f"{j.name}-{n}"
    return jobs


# ---------------------------------------------------------------- worker side
def _worker_main(conn: Any, cfg_dict: dict[str, Any]) -> None:
    os.setsid()  # own process group: the parent can kill us together with our Chromium
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from vlmagent.web.browser import Browser
    from vlmagent.rewards import SiteContext, build_cascade

    cfg = from_dict(Config, cfg_dict, "<worker>")
    with Browser(cfg.browser) as browser:
        cascade = build_cascade(cfg, browser)
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            path, chash, artifacts, link_base = msg
            site = SiteContext(Path(path), chash, Path(artifacts), Path(link_base))
            try:
                conn.send(cascade(site).to_dict())
            except (BrokenPipeError, OSError):
                return


class _Worker:
    def __init__(self, ctx: Any, cfg_dict: dict[str, Any]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg_dict), daemon=True)
        self.proc.start()
        child.close()
        self.job: SiteJob | None = None
        self.started = 0.0

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.kill()


# ---------------------------------------------------------------- results file
def _read_lines(out: Path) -> list[dict[str, Any]]:
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


def _line(job: SiteJob, result: dict[str, Any] | None, error: str | None,
          seconds: float) -> dict[str, Any]:
    r = result or {"reward": 0.0, "stages": []}
    err = error or r.get("error")
    return {"site": job.name, "path": str(job.path), "content_hash": job.content_hash,
            "reward": float(r["reward"]), "stages": r["stages"], "error": err,
            "seconds": round(seconds, 3)}


# ---------------------------------------------------------------- the job
def score(paths: list[str | Path], out: str | Path, cfg: Config | None = None,
          workers: int | None = None, resume: bool = False, report: str | Path | None = None,
          progress: bool = True) -> Summary:
    cfg = cfg or Config()
    t0 = time.monotonic()
    jobs = discover(paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    artifacts_root = out.parent / f"{out.stem}.artifacts"
    old = _read_lines(out) if resume else []
    if not resume:
        out.write_bytes(b"")
    done = {(d["path"], d["content_hash"]): d for d in old}
    by_hash = {d["content_hash"]: d for d in old}

    for j in tqdm(jobs, desc="hashing", unit="site", disable=not progress or len(jobs) < 50):
        j.content_hash = site_hash(j.path)
    final: dict[str, dict[str, Any]] = {}  # site name -> its line
    todo: dict[str, list[SiteJob]] = {}  # content hash -> sites sharing it (scored once)
    resumed = duplicates = 0
    with open(out, "a", encoding="utf-8") as f:
        def emit(line: dict[str, Any]) -> None:
            f.write(json.dumps(line) + "\n")
            f.flush()  # flushed per site: a SIGKILL loses only sites in flight
            final[line["site"]] = line

        for j in jobs:
            if (str(j.path), j.content_hash) in done:
                final[j.name] = {**done[(str(j.path), j.content_hash)], "site": j.name}
                resumed += 1
            elif j.content_hash in by_hash:  # same bytes scored before under another path
                prev = by_hash[j.content_hash]
                emit(_line(j, prev, prev.get("error"), prev.get("seconds", 0.0)))
                duplicates += 1
            else:
                todo.setdefault(j.content_hash, []).append(j)
        bar = tqdm(total=len(jobs), initial=len(final), desc="scoring", unit="site",
                   disable=not progress, mininterval=0.5)
        n_workers = max(1, min(workers or cfg.score.workers, len(todo) or 1))
        for line in _run_pool(todo, cfg, n_workers, artifacts_root, out.parent):
            first = True
            for j in todo[line["content_hash"]]:
                emit({**line, "site": j.name, "path": str(j.path)})
                duplicates += 0 if first else 1
                first = False
                bar.update(1)
        bar.close()

    lines = [final[j.name] for j in jobs if j.name in final]
    summary = summarize(lines, cfg, time.monotonic() - t0, resumed, duplicates)
    if report:
        from vlmagent.scoring.report import write_report
        write_report(lines, Path(report), summary, results_dir=out.parent)
    return summary


def _run_pool(todo: dict[str, list[SiteJob]], cfg: Config, n_workers: int,
              artifacts_root: Path, link_base: Path):
    """Yield one result line per content hash, scoring on n_workers processes."""
    if not todo:
        return
    ctx = mp.get_context("spawn")  # fork + Playwright threads do not mix
    cfg_dict = to_dict(cfg)
    queue = deque(jobs[0] for jobs in todo.values())
    pool = [_Worker(ctx, cfg_dict) for _ in range(n_workers)]
    limit = cfg.score.site_timeout_s
    try:
        while queue or any(w.job for w in pool):
            for w in pool:
                if w.job is None and queue:
                    w.job = queue.popleft()
                    w.started = time.monotonic()
                    msg = (str(w.job.path.resolve()), w.job.content_hash,
                           str((artifacts_root / w.job.content_hash[:16]).resolve()),
                           str(link_base.resolve()))
                    w.conn.send(msg)
            busy = [w for w in pool if w.job]
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=0.5)
            for i, w in enumerate(pool):
                if w.job is None:
                    continue
                job, elapsed = w.job, time.monotonic() - w.started
                error, result = None, None
                if w.conn in ready:
                    try:
                        result = w.conn.recv()
                    except (EOFError, OSError):
                        error = f"worker died (exit code {w.proc.exitcode})"
                elif w.proc.sentinel in ready or not w.proc.is_alive():
                    error = f"worker died (exit code {w.proc.exitcode})"
                elif elapsed > limit:
                    error = f"timed out after {limit:.0f} s; worker and browser killed"
                else:
                    continue
                if error:
                    log.warning("%s: %s", job.name, error)
                    w.kill()
                    pool[i] = w = _Worker(ctx, cfg_dict)
                w.job = None
                yield _line(job, result, error, elapsed)
    finally:
        for w in pool:
            if w.job is not None:
                w.kill()
            else:
                w.stop()


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

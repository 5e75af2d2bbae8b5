"""`vlmagent score --from-responses FILE --scaffold NAME`: score model responses as websites.

FILE has one JSON object per line: {"id": ..., "text": "<the model's whole response>"}.
Each response is a job for the runner (runner.py), the same worker pool and cascade as site
folders: it is parsed and materialised (web/webgen.py) under <out>.projects/<folder>/ when the
runner gets to it; a response that cannot become a project gets its line at once (a job with a
precomputed line), as a structure failure with the reason (rewards/response.py). Result lines are
the site lines plus "id"; `--resume` skips ids already in the results file (they are not parsed
again). Locked scaffold files a response also wrote are noted in its structure details (the
runner's decorate hook). A scaffold with a build step gets the "build" stage inserted after
"structure" if the config does not list it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from vlmagent.config import Config
from vlmagent.errors import UsageError
from vlmagent.rewards.cascade import site_hash
from vlmagent.rewards.response import note_ignored, rejected
from vlmagent.scoring.runner import Job, Summary, result_line, run_jobs
from vlmagent.web import webgen

log = logging.getLogger("vlmagent.score")


def read_responses(path: str | Path) -> list[tuple[str, Any]]:
    """(id, text) per line. A broken line is the caller's input error (UsageError, exit 2); a
    null or missing text is an empty response, which scores as one."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read responses {path}: {e}") from None
    items: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError as e:
            raise UsageError(f"{path}:{n}: not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("id") in (None, ""):
            raise UsageError(f'{path}:{n}: expected an object with "id" and "text"')
        rid, text = str(d["id"]), d.get("text")
        if text is not None and not isinstance(text, str):
            raise UsageError(f'{path}:{n}: "text" must be a string')
        if rid in seen:
            raise UsageError(f"{path}:{n}: duplicate id {rid!r}")
        seen.add(rid)
        items.append((rid, text or ""))
    return items


def folder_name(rid: str) -> str:
    """A folder name for any id: readable, never a path, unique by the id's hash."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", rid)[:60].lstrip(".") or "r"
    return f"{safe}-{hashlib.sha256(rid.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def with_scaffold(cfg: Config, name: str | None) -> tuple[Config, webgen.Scaffold]:
    """cfg for this scaffold (webgen.scaffold set, "build" in the stages when it needs one), and
    the scaffold."""
    cfg = copy.deepcopy(cfg)
    cfg.webgen.scaffold = name or cfg.webgen.scaffold
    try:
        scaffold = webgen.load_scaffold(cfg.webgen.scaffold)
    except ValueError as e:
        raise UsageError(str(e)) from None
    stages = cfg.reward.stages
    if scaffold.build and "build" not in stages:
        at = stages.index("structure") + 1 if "structure" in stages else 0
        stages.insert(at, "build")
        log.info("scaffold %s builds: reward stages %s", scaffold.name, stages)
    return cfg, scaffold


def score_responses(responses: str | Path, out: str | Path, cfg: Config | None = None,
                    scaffold: str | None = None, workers: int | None = None,
                    resume: bool = False, report: str | Path | None = None,
                    progress: bool = True) -> Summary:
    """Score every response in the JSONL file `responses` into `out` (one line per id)."""
    t0 = time.monotonic()
    cfg, sc = with_scaffold(cfg or Config(), scaffold)
    texts = dict(read_responses(responses))
    projects = Path(out).parent / f"{Path(out).stem}.projects"
    ignored: dict[str, list[dict[str, str]]] = {}  # id -> locked files it also wrote

    def prepare(job: Job) -> None:  # a response not resumed: its project, or its line
        t1 = time.monotonic()
        text = texts[job.name]
        prep = webgen.prepare(text, sc, projects / folder_name(job.name), cfg.webgen)
        if prep.root is None:
            r = rejected(prep, text, len(cfg.reward.stages), cfg.reward.weights)
            job.content_hash = r.content_hash
            job.line = result_line(job, r.to_dict(), None, time.monotonic() - t1)
            return
        ignored[job.name] = prep.ignored
        job.path, job.content_hash = prep.root, site_hash(prep.root)

    def decorate(job: Job, line: dict[str, Any]) -> dict[str, Any]:
        note_ignored(line["stages"], ignored.get(job.name, []))
        return line

    jobs = [Job(rid, fields={"id": rid}) for rid in texts]
    return run_jobs(jobs, out, cfg, resume_by="id", resume=resume, workers=workers,
                    report=report, progress=progress, prepare=prepare, prepare_desc="parsing",
                    decorate=decorate, unit="response", started=t0)

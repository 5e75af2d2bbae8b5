"""`vlmagent score --from-responses FILE --scaffold NAME`: score model responses as websites.

FILE has one JSON object per line: {"id": ..., "text": "<the model's whole response>"}.
Each response is parsed and materialised (domains/webgen.py) under <out>.projects/<id>/, then
scored by the same worker pool and cascade as site folders (scoring.py); a response that cannot
become a project gets its line at once, as a structure failure with the reason. Result lines are
the site lines plus "id"; `--resume` skips ids already in the results file. A scaffold with a
build step gets the "build" stage inserted after "structure" if the config does not list it.
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

from tqdm import tqdm

from vlmagent.config import Config
from vlmagent.web import webgen
from vlmagent.rewards.cascade import compose, site_hash
from vlmagent.errors import UsageError
from vlmagent.scoring.sites import SiteJob, Summary, _line, _read_lines, _run_pool, summarize

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
    t0 = time.monotonic()
    cfg, sc = with_scaffold(cfg or Config(), scaffold)
    items = read_responses(responses)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    projects = out.parent / f"{out.stem}.projects"
    artifacts_root = out.parent / f"{out.stem}.artifacts"
    old = _read_lines(out) if resume else []
    if not resume:
        out.write_bytes(b"")
    done = {d["id"]: d for d in old if "id" in d}
    final: dict[str, dict[str, Any]] = {}
    todo: dict[str, list[SiteJob]] = {}
    ignored: dict[str, list[dict[str, str]]] = {}
    resumed = duplicates = 0
    with open(out, "a", encoding="utf-8") as f:
        def emit(line: dict[str, Any]) -> None:
            f.write(json.dumps(line) + "\n")
            f.flush()
            final[line["id"]] = line

        for rid, text in tqdm(items, desc="parsing", unit="response",
                              disable=not progress or len(items) < 50):
            if rid in done:
                final[rid] = done[rid]
                resumed += 1
                continue
            t1 = time.monotonic()
            prep = webgen.prepare(text, sc, projects / folder_name(rid), cfg.webgen)
            if prep.root is None:
                stages = [webgen.rejection_stage(prep)]
                reward = compose(stages, len(cfg.reward.stages), cfg.reward.weights)
                job = SiteJob(rid, Path(), webgen.response_hash(text))
                line = _line(job, {"reward": reward, "stages": [s.to_dict() for s in stages]},
                             None, time.monotonic() - t1)
                emit({**line, "path": "", "id": rid})
                continue
            ignored[rid] = prep.ignored
            job = SiteJob(rid, prep.root, site_hash(prep.root))
            todo.setdefault(job.content_hash, []).append(job)
        bar = tqdm(total=len(items), initial=len(final), desc="scoring", unit="response",
                   disable=not progress, mininterval=0.5)
        n_workers = max(1, min(workers or cfg.score.workers, len(todo) or 1))
        for line in _run_pool(todo, cfg, n_workers, artifacts_root, out.parent):
            for k, j in enumerate(todo[line["content_hash"]]):
                stages = copy.deepcopy(line["stages"])
                if ignored.get(j.name) and stages and stages[0]["name"] == "structure":
                    stages[0]["details"]["ignored_files"] = ignored[j.name]
                emit({**line, "site": j.name, "path": str(j.path), "stages": stages,
                      "id": j.name})
                duplicates += k > 0  # the same files twice: scored once
                bar.update(1)
        bar.close()
    lines = [final[rid] for rid, _ in items if rid in final]
    summary = summarize(lines, cfg, time.monotonic() - t0, resumed, duplicates)
    if report:
        from vlmagent.scoring.report import write_report
        write_report(lines, Path(report), summary, results_dir=out.parent)
    return summary

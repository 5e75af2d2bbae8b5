"""The website cascade as the answer term of web-generation episodes, scored while the policy
generates.

`WebReward` turns each finished episode's final answer into a project (web/webgen.py: parse,
materialise into the scaffold) and hands it to a `RewardPool` (scoring/pool.py: the worker
processes of `vlmagent score`, each holding a Chromium and the cascade; with score.backend: ray,
Ray actors doing the same, scoring/ray_backend.py). `submit` returns at once,
so projects are built and driven in the browser while the rest of the batch is still being
generated; `collect` waits for the keys a step needs. The result of every project is the line
`vlmagent score --from-responses` writes for the same response and config (the same parse, the
same `rejected` line for a response that is not a project, the same cascade and composition), so
the reward that trains the policy is the reward the batch scorer reports.

The pool is advanced by a pump thread (the pool itself is single-threaded: every call to it
holds one lock): a worker that finishes while the policy is generating gets the next queued
project at once, and a project over its time limit is killed on time, not at the next submit.

One pool per scaffold: a scaffold that builds (vite-react) has the build stage in its cascade
(scoring/responses.py: with_scaffold), which changes the number of stages and so the reward's
composition. Identical projects are scored once (the pool's cache: content hash + config), and
with a `cache_path` the cache survives a killed run, so a resumed stage does not rescore.
"""
from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmagent.config import Config
from vlmagent.rewards.cascade import site_hash
from vlmagent.rewards.episode import Answer, final_text
from vlmagent.rewards.response import note_ignored, rejected
from vlmagent.web import webgen

# the checks a functional site passes in full (rewards/execution.py); "interactive" only counts
# when the page had something to click or fill
FUNCTIONAL_CHECKS = ("loads", "renders", "no_exceptions", "console_clean", "requests_ok",
                     "sandbox_clean", "links_ok", "interactive")


@dataclass
class WebScore:
    """One project's verdict: the `vlmagent score` line and the WebGen-R1 numbers read from it."""

    reward: float  # the cascade reward, exactly the line's "reward"
    line: dict[str, Any]  # reward, stages (dicts), content_hash, error
    metrics: dict[str, float] = field(default_factory=dict)


def stage_of(line: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in line.get("stages", []) if s["name"] == name), None)


def line_metrics(line: dict[str, Any]) -> dict[str, float]:
    """WebGen-R1's numbers for one result line (a training result or a `vlmagent score` line):

    functional   1.0 when execution passed and every functional check is full (the page loads
                 and renders, no uncaught exception or console error, no sub-request failed,
                 none was blocked (outside the site and the CDN mirror: in the sandbox the page
                 goes without it), every internal link works, every element it could use
                 changed the page)
    rendered     1.0 when the index page rendered something (not blank): the valid render ratio
    aesthetic    the aesthetics stage's score x 5 (0-5); 0.0 when it did not run (nothing to see)
    built        1.0 / 0.0 when the cascade has a build stage that ran; absent otherwise
    """
    ex = stage_of(line, "execution")
    checks = (ex or {}).get("details", {}).get("checks", {})
    gate = (ex or {}).get("details", {}).get("gate", {})
    functional = bool(ex and ex["passed"]) and all(
        checks.get(k, 1.0) >= 1.0 for k in FUNCTIONAL_CHECKS)
    aes = stage_of(line, "aesthetics")
    out = {"functional": float(functional), "rendered": float(bool(gate.get("index_renders"))),
           "aesthetic": 5.0 * float(aes["score"]) if aes else 0.0}
    build = stage_of(line, "build")
    if build is not None or "build" in line.get("cascade", ()):
        out["built"] = float(bool(build and build["passed"]))
    return out


def brief(score: WebScore) -> dict[str, Any]:
    """A project's verdict, short enough to keep on every trajectory: the reward, its WebGen-R1
    numbers, each stage's score, and the first reason it lost points."""
    line = score.line
    stages = line.get("stages", [])
    reason = line.get("error")
    for s in stages:  # the first failed stage's problem, else the first problem any stage saw
        d = s.get("details", {})
        if reason is None and not s["passed"]:
            reason = d.get("problem") or next(iter(d.get("problems", [])), None) or \
                f"{s['name']} failed"
    for s in stages:
        d = s.get("details", {})
        if reason is None and s["score"] < 1.0:
            reason = next(iter(d.get("problems", [])), None) or next(
                iter(d.get("failures", [])), None)
    if reason is None and stages and min(s["score"] for s in stages) < 1.0:
        low = min(stages, key=lambda s: s["score"])
        reason = f"{low['name']} scored {low['score']:.3f}"
    if isinstance(reason, dict):  # a structure failure: {"file", "problem"}
        reason = f"{reason.get('file')}: {reason.get('problem')}"
    return {"reward": score.reward, **score.metrics, "reason": reason,
            "stages": {s["name"]: round(float(s["score"]), 4) for s in line.get("stages", [])}}


def summarize(scores: Sequence[WebScore], scaffolds: Sequence[str]) -> dict[str, float]:
    """Batch means: cascade_reward, functional_success_rate, valid_render_ratio, aesthetic_score
    (0-5), and build_success_rate over the projects whose scaffold builds (when any)."""
    n = max(1, len(scores))
    out = {"cascade_reward": sum(s.reward for s in scores) / n,
           "functional_success_rate": sum(s.metrics["functional"] for s in scores) / n,
           "valid_render_ratio": sum(s.metrics["rendered"] for s in scores) / n,
           "aesthetic_score": sum(s.metrics["aesthetic"] for s in scores) / n}
    built = [s.metrics["built"] for s, sc in zip(scores, scaffolds, strict=True)
             if webgen.load_scaffold(sc).build]
    if built:
        out["build_success_rate"] = sum(built) / len(built)
    return out


def _folder(key: Hashable) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key))[:80].lstrip(".") or "k"


class WebReward:
    """Submit responses as their episodes end; collect their cascade results before a step."""

    def __init__(self, cfg: Config, workdir: str | Path, workers: int | None = None,
                 cache_path: str | Path | None = None, pump_s: float = 0.02):
        self.cfg, self.workdir = cfg, Path(workdir)
        self.workers = workers or cfg.score.workers
        self.cache_path = Path(cache_path) if cache_path else None
        self.pools: dict[str, tuple[Config, webgen.Scaffold, Any]] = {}
        self.pending: dict[Hashable, tuple[str, Path | None, list[dict[str, str]]]] = {}
        self.ready: dict[Hashable, WebScore] = {}  # rejected responses: known at submit
        self.finished: dict[Hashable, Any] = {}  # pool results not collected yet (Done)
        self.busy_s = 0.0  # time collect() spent waiting for results (not overlapped)
        self.scored = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pump_s = pump_s
        self._thread: threading.Thread | None = None

    def _pool(self, scaffold: str) -> tuple[Config, webgen.Scaffold, Any]:
        if scaffold not in self.pools:  # lazily: a static-only run never starts a build pool
            from vlmagent.scoring.backends import open_pool
            from vlmagent.scoring.responses import with_scaffold

            cfg, sc = with_scaffold(self.cfg, scaffold)
            cache = None
            if self.cache_path is not None:
                cache = self.cache_path.with_name(f"{self.cache_path.stem}-{scaffold}"
                                                  f"{self.cache_path.suffix}")
            pool = open_pool(cfg, self.workers, self.workdir / "artifacts" / scaffold,
                             link_base=self.workdir, cache_path=cache)
            self.pools[scaffold] = (cfg, sc, pool)
            if self._thread is None:
                self._thread = threading.Thread(target=self._pump, name="web-reward-pump",
                                                daemon=True)
                self._thread.start()
        return self.pools[scaffold]

    def _pump(self) -> None:
        while not self._stop.wait(self._pump_s):
            with self._lock:
                self._poll()

    def _poll(self) -> None:  # holds the lock
        for _, _, pool in list(self.pools.values()):
            for d in pool.poll(0.0):
                self.finished[d.key] = d

    def submit(self, key: Hashable, text: Any, scaffold: str) -> None:
        """Parse and materialise `text` now (milliseconds) and queue its project for scoring."""
        if key in self.pending or key in self.ready:
            raise ValueError(f"key {key!r} was submitted already")
        with self._lock:
            cfg, sc, pool = self._pool(scaffold)
        root = self.workdir / "projects" / _folder(key)
        prep = webgen.prepare(text, sc, root, cfg.webgen)
        if prep.root is None:  # not a project: its structure failure, as score writes it
            r = rejected(prep, text, len(cfg.reward.stages), cfg.reward.weights).to_dict()
            self.ready[key] = self._score({**r, "error": None}, cfg)
            return
        chash = site_hash(prep.root)
        with self._lock:
            pool.submit(key, prep.root, chash)
        self.pending[key] = (scaffold, prep.root, prep.ignored)

    def collect(self, keys: Iterable[Hashable]) -> dict[Hashable, WebScore]:
        """The results of `keys` (waits for those still being scored); their folders go."""
        keys = list(keys)
        out = {k: self.ready.pop(k) for k in keys if k in self.ready}
        missing = [k for k in keys if k not in out and k not in self.pending]
        if missing:
            raise KeyError(f"key {missing[0]!r} was never submitted")
        t0 = time.monotonic()
        want = [k for k in keys if k not in out]
        while True:
            with self._lock:
                self._poll()
                if all(k in self.finished for k in want):
                    break
            time.sleep(self._pump_s)
        for k in want:
            d = self.finished.pop(k)
            scaffold, root, ignored = self.pending.pop(k)
            cfg = self.pools[scaffold][0]
            r = d.result or {"reward": 0.0, "stages": []}
            line = {"reward": float(r["reward"]), "stages": r["stages"],
                    "content_hash": d.content_hash, "error": d.error or r.get("error")}
            note_ignored(line["stages"], ignored)
            out[k] = self._score(line, cfg)
            self.scored += not d.cached
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
        self.busy_s += time.monotonic() - t0
        return out

    @staticmethod
    def _score(line: dict[str, Any], cfg: Config) -> WebScore:
        line = {**line, "cascade": list(cfg.reward.stages)}
        return WebScore(float(line["reward"]), line, line_metrics(line))

    def stats(self) -> dict[str, float]:
        """The pools' counters summed (scoring/pool.py PoolStats: scored, cache_hits, attached,
        errors, worker_restarts, busy_s, job_s), and projects scored per busy second."""
        total: dict[str, float] = {}
        for _, _, pool in self.pools.values():
            for k, v in vars(pool.stats).items():
                total[k] = total.get(k, 0) + v
        busy = total.get("busy_s", 0.0)
        total["scored_per_s"] = total.get("scored", 0) / busy if busy else 0.0
        return total

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for _, _, pool in self.pools.values():
            pool.close()
        self.pools.clear()

    def __enter__(self) -> WebReward:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def answer_of(score: WebScore) -> Answer:
    """The answer term of a project: value = the cascade reward, accuracy = functional."""
    return Answer(score.reward, score.metrics["functional"],
                  {"cascade": score.line, "web": score.metrics, "brief": brief(score)})


class AnswerBatch:
    """One batch of answers on a WebReward: answer i (samples[i]'s scaffold) is submitted as
    soon as its episode ends (`on_done`) or when `answers` asks for it; `answers` returns every
    answer term in order. The one path online RL, evaluation and the batch scorer share."""

    def __init__(self, web: WebReward, samples: Sequence[Any], prefix: str = "a"):
        self.web, self.samples, self.prefix = web, samples, prefix
        self.submitted: set[int] = set()

    def submit(self, i: int, text: str) -> None:
        self.web.submit(f"{self.prefix}-{i}", text, self.samples[i].meta["scaffold"])
        self.submitted.add(i)

    def on_done(self, offset: int = 0) -> Any:
        """agent.rollout's on_done for a call whose first episode is answer `offset`."""
        return lambda i, traj: self.submit(offset + i, final_text(traj))

    def answers(self, texts: Sequence[str]) -> list[Answer]:
        for i, t in enumerate(texts):
            if i not in self.submitted:
                self.submit(i, t)
        keys = [f"{self.prefix}-{i}" for i in range(len(texts))]
        got = self.web.collect(keys)
        return [answer_of(got[k]) for k in keys]

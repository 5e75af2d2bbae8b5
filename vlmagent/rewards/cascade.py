"""The gated reward cascade: ordered stages, each run only if every earlier stage passed.

Composition (the one hard property: failing stage k always scores below passing stage k):

    p     = number of stages passed (a prefix, since a failed stage stops the cascade)
    q     = weighted mean of the scores of every stage that ran, in [0, 1]
            (weights from the config, renormalised over the stages that ran)
    total = (p + q) / (N + 1),   with q capped just below 1 while p < N

So a site that failed stage k lies in [ (k-1)/(N+1), k/(N+1) ) and a site that passed it lies in
[ k/(N+1), 1 ]: gates order sites by how far they got, scores order them within a gate band.
Equal band widths keep the reward's scale independent of the weights, which only shape q.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vlmagent.types import RewardResult, SiteVisit, StageScore

_BELOW_ONE = 1.0 - 1e-9


@dataclass
class SiteContext:
    """What website stages see. Stages may leave data for later ones (execution -> aesthetics)."""

    root: Path
    content_hash: str
    artifacts: Path | None = None  # where stages may write files (screenshots)
    link_base: Path | None = None  # file paths in details are written relative to this folder
    visit: SiteVisit | None = None
    unfinished: list[str] = field(default_factory=list)  # structure: the index is cut off, ...

    @classmethod
    def from_dir(cls, root: str | Path, **kw: Any) -> SiteContext:
        return cls(root=Path(root), content_hash=site_hash(root), **kw)

    def link(self, path: str | Path | None) -> str | None:
        if path is None:
            return None
        p = Path(path)
        if self.link_base is not None:
            try:
                return p.resolve().relative_to(self.link_base.resolve()).as_posix()
            except ValueError:
                pass
        return p.as_posix()


class Stage(Protocol):
    name: str

    def __call__(self, item: Any, deadline: float) -> StageScore:
        """Score `item`; must return by `deadline` (time.monotonic()) as best it can."""
        ...


def compose(stages: Sequence[StageScore], n_stages: int, weights: dict[str, float]) -> float:
    """Total reward of a cascade run, see the module docstring. Pure."""
    if n_stages <= 0:
        return 0.0
    passed = 0
    for s in stages:
        if not s.passed:
            break
        passed += 1
    ran = list(stages)
    w = [max(0.0, float(weights.get(s.name, 1.0))) for s in ran]
    if ran and sum(w) <= 0:
        w = [1.0] * len(ran)
    q = sum(wi * min(1.0, max(0.0, s.score)) for wi, s in zip(w, ran)) / sum(w) if ran else 0.0
    if passed < n_stages:
        q = min(q, _BELOW_ONE)
    return (passed + q) / (n_stages + 1)


class Cascade:
    """Runs stages in order with gates, per-stage timeouts and a content-hash cache."""

    def __init__(self, stages: Sequence[Stage], weights: dict[str, float] | None = None,
                 timeouts_s: dict[str, float] | None = None, fingerprint: str = "",
                 cache_dir: str | Path | None = None, cache_size: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self.stages = list(stages)
        self.weights = dict(weights or {})
        self.timeouts_s = dict(timeouts_s or {})
        # The fingerprint (config + code version) is in the cache key: new settings, new scores.
        self.fingerprint = fingerprint
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: OrderedDict[str, RewardResult] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def __call__(self, item: Any) -> RewardResult:
        key = self._key(item.content_hash)
        hit = self._get(key)
        if hit is not None:
            return hit
        t0 = self._clock()
        scores: list[StageScore] = []
        error = None
        for stage in self.stages:
            timeout = float(self.timeouts_s.get(stage.name, 60.0))
            start = self._clock()
            try:
                score = stage(item, start + timeout)
            except Exception as e:  # a stage bug must not take the batch down; it fails the gate
                score = StageScore(stage.name, 0.0, False,
                                   {"error": f"{type(e).__name__}: {e}"})
                error = f"stage {stage.name} raised {type(e).__name__}: {e}"
            score.seconds = round(self._clock() - start, 3)
            if score.seconds > timeout:
                score.details["overran_s"] = round(score.seconds - timeout, 3)
            score.score = min(1.0, max(0.0, float(score.score)))
            scores.append(score)
            if not score.passed:
                break
        result = RewardResult(
            reward=compose(scores, len(self.stages), self.weights), stages=scores,
            content_hash=item.content_hash, error=error, seconds=round(self._clock() - t0, 3))
        if error is None:  # never cache a stage crash: the next call may succeed
            self._put(key, result)
        return result

    # ------------------------------------------------------------ cache
    def _key(self, content_hash: str) -> str:
        return hashlib.sha256(f"{self.fingerprint}\0{content_hash}".encode()).hexdigest()

    def _get(self, key: str) -> RewardResult | None:
        res = self._memory.get(key)
        if res is None and self.cache_dir is not None:
            f = self.cache_dir / f"{key}.json"
            try:
                d = json.loads(f.read_text())
                res = RewardResult(d["reward"], [StageScore(**s) for s in d["stages"]],
                                   d["content_hash"], d["error"], d["seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                res = None
        if res is None:
            return None
        self._memory[key] = res
        self._memory.move_to_end(key)
        out = copy.deepcopy(res)
        out.cached = True
        return out

    def _put(self, key: str, result: RewardResult) -> None:
        self._memory[key] = copy.deepcopy(result)
        while len(self._memory) > self._cache_size:
            self._memory.popitem(last=False)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f".{key}.tmp"
            tmp.write_text(json.dumps(result.to_dict()))
            tmp.replace(self.cache_dir / f"{key}.json")  # atomic: a killed run leaves no half file


def fingerprint(*parts: Any) -> str:
    """Stable hash of JSON-able config parts (used as the cache namespace)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def site_hash(root: str | Path) -> str:
    """sha256 over every entry under root: relative path, kind, and bytes (files) or target (links).

    Symlinks are hashed by their target string and never followed, so the hash reads nothing
    outside the folder. A missing or empty folder still has a well-defined hash.
    """
    h = hashlib.sha256(b"vlmagent-site-v1\0")
    root = Path(root)
    if not root.is_dir():
        h.update(b"missing")
        return h.hexdigest()
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in dirnames + filenames:
            entries.append(Path(dirpath, name))
    for p in sorted(entries, key=lambda p: p.relative_to(root).as_posix()):
        rel = p.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
        if p.is_symlink():
            h.update(b"L\0" + rel + b"\0" + os.readlink(p).encode("utf-8", "surrogateescape"))
        elif p.is_dir():
            h.update(b"D\0" + rel + b"\0")
        elif p.is_file():
            h.update(b"F\0" + rel + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\0")
        else:  # fifo, socket, device: record the name, never open it (a fifo would block)
            h.update(b"S\0" + rel + b"\0")
    return h.hexdigest()

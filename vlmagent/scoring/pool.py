"""RewardPool: the reward cascade as a persistent service on N worker processes.

Used by `vlmagent score` (runner.py: a fixed set of jobs) and by online RL (the trainer submits
each generated project as its episode ends and collects rewards before the optimiser step).

Each worker owns one headless browser (a fresh context per site) and one Cascade. Workers are
spawned at construction and start their browsers in the background; nothing here blocks on them
except poll/wait with a timeout. A job's hard wall time is score.site_timeout_s, counted from
when its worker is up; starting a worker has a limit of the same length, counted from its spawn.
A worker that exceeds either, or dies, is killed with its whole process group (its Chromium goes
with it) and replaced, and its job gets an error result (result None).

Identical projects are scored once: a submit whose content hash is queued or in flight attaches
to it, and finished results are cached by (config digest, content hash). The digest covers only
the sections that change a reward (browser, reward, webgen) and the code version. With a cache
file, every finished result (errors and timeouts too: a project that hung hangs again) is
appended as one JSON line and flushed, and a new pool loads the file, so a resumed training run
does not rescore. One pool writes a cache file at a time.
"""
from __future__ import annotations

import copy
import json
import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from vlmagent.config import Config, to_dict

# SiteScorer is re-exported: ray_backend.py builds its actors on it from here
from vlmagent.scoring.worker import READY, SiteScorer, _worker_main  # noqa: F401

log = logging.getLogger("vlmagent.score")


def config_digest(cfg: Config) -> str:
    """What a cached result is valid for: the sections that change a reward, and the code version
    (the same parts as the cascade's own cache fingerprint)."""
    from vlmagent.rewards import CODE_VERSION, fingerprint
    return fingerprint(CODE_VERSION, to_dict(cfg.reward), to_dict(cfg.browser),
                       to_dict(cfg.webgen))


@dataclass
class Done:
    """A finished key. error: the pool's (worker killed or died; result None) or the result's own
    (a stage raised)."""

    key: Hashable
    content_hash: str
    result: dict[str, Any] | None  # RewardResult.to_dict(), or None when the worker failed
    error: str | None
    seconds: float  # the scoring time (of the original run, for cache hits)
    cached: bool = False


@dataclass
class PoolStats:
    submitted: int = 0
    scored: int = 0  # jobs finished by workers (errors included)
    cache_hits: int = 0
    attached: int = 0  # submits that joined an identical project already queued or in flight
    errors: int = 0  # scored jobs with an error
    worker_restarts: int = 0
    busy_s: float = 0.0  # wall seconds with a job queued or in flight
    job_s: float = 0.0  # sum of the scoring seconds of the scored jobs

    @property
    def scored_per_s(self) -> float:
        return self.scored / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class _Job:
    content_hash: str
    path: Path
    keys: list[Hashable]  # the first submitted it; the rest attached


class _Worker:
    def __init__(self, ctx: Any, cfg_dict: dict[str, Any]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg_dict), daemon=True)
        self.proc.start()  # returns once spawned; the browser starts in the child
        child.close()
        self.spawned = time.monotonic()
        self.job: _Job | None = None
        self.started = 0.0  # when its job was handed out; restarted when the worker is ready
        self.ready = False

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # not yet its own group leader
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


# ---------------------------------------------------------------- the pool
class RewardPool:
    """submit() projects, poll() or wait() for their Done. Not thread-safe: one thread drives
    it (a trainer polls between generation steps; nothing runs in the background but the
    workers, so a job's deadline is enforced on the next poll or wait)."""

    def __init__(self, cfg: Config, workers: int, artifacts_root: Path,
                 link_base: Path | None = None, cache_path: Path | None = None):
        self.cfg = cfg
        self._closed = False
        self.limit = float(cfg.score.site_timeout_s)
        self.start_limit = float(cfg.score.worker_start_s)
        self.artifacts_root = Path(artifacts_root)
        self.link_base = None if link_base is None else str(Path(link_base).resolve())
        self.digest = config_digest(cfg)
        self.cache_path = None if cache_path is None else Path(cache_path)
        self._cache: dict[str, tuple[dict[str, Any] | None, str | None, float]] = {}
        if self.cache_path is not None:
            self._load_cache()
        self._stats = PoolStats()
        self._busy_since: float | None = None
        self._queue: deque[_Job] = deque()
        self._jobs: dict[str, _Job] = {}  # content hash -> queued or in-flight job
        self._open: dict[Hashable, str] = {}  # key -> content hash: submitted, not yet returned
        self._done: dict[Hashable, Done] = {}  # finished, not yet returned
        # Every Done and the cache hold their own copy of a result: a caller may edit its stages.
        self._ctx = mp.get_context("spawn")  # fork + Playwright threads do not mix
        self._cfg_dict = to_dict(cfg)
        # A slot is None after a worker that never came up is gone: the next job spawns one, so
        # a browser that cannot start gives jobs errors instead of a busy respawn loop.
        self._slots: list[_Worker | None] = [self._spawn() for _ in range(max(1, workers))]

    # ------------------------------------------------------------ public
    @property
    def stats(self) -> PoolStats:
        s = replace(self._stats)
        if self._busy_since is not None:
            s.busy_s += time.monotonic() - self._busy_since
        return s

    def submit(self, key: Hashable, path: Path, content_hash: str) -> None:
        """Queue `key` (non-blocking); a cached or identical project is not scored again."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        if key in self._open:
            raise ValueError(f"key {key!r} is already submitted and not yet returned")
        self._stats.submitted += 1
        self._open[key] = content_hash
        if content_hash in self._cache:
            result, error, seconds = self._cache[content_hash]
            self._stats.cache_hits += 1
            self._done[key] = Done(key, content_hash, copy.deepcopy(result), error, seconds,
                                   cached=True)
        elif content_hash in self._jobs:
            self._stats.attached += 1
            self._jobs[content_hash].keys.append(key)
        else:
            job = _Job(content_hash, Path(path), [key])
            self._jobs[content_hash] = job
            self._queue.append(job)
            self._dispatch()
        self._tick()

    def poll(self, timeout: float = 0.0) -> list[Done]:
        """Advance the pool for up to `timeout` seconds (returning early once a key finished);
        the keys finished since the last poll, in order."""
        self._advance(timeout, lambda: bool(self._done))
        out = list(self._done.values())
        self._done.clear()
        for d in out:
            self._open.pop(d.key, None)
        return out

    def wait(self, keys: Iterable[Hashable] | None = None,
             timeout: float | None = None) -> dict[Hashable, Done]:
        """Block until `keys` (default: every key submitted and not yet returned) are done and
        return them; other keys finishing meanwhile wait for the next poll. With a timeout, the
        keys done by then (the rest stay open)."""
        want = list(self._open) if keys is None else list(keys)
        unknown = [k for k in want if k not in self._open]
        if unknown:
            raise KeyError(f"not submitted, or already returned: {unknown[0]!r}")
        self._advance(float("inf") if timeout is None else timeout,
                      lambda: all(k in self._done for k in want))
        out = {k: self._done.pop(k) for k in want if k in self._done}
        for k in out:
            self._open.pop(k, None)
        return out

    def running(self) -> dict[Hashable, int]:
        """Keys being scored now (their worker is up) -> the worker's pid."""
        return {w.job.keys[0]: w.proc.pid for w in self._slots
                if w is not None and w.job is not None and w.ready}

    def close(self) -> None:
        """Stop the workers: idle ones finish cleanly, busy or starting ones are killed."""
        if self._closed:
            return
        self._closed = True
        idle = []
        for w in self._slots:
            if w is None:
                continue
            if w.job is None and w.ready and w.proc.is_alive():
                try:
                    w.conn.send(None)
                    idle.append(w)
                    continue
                except (BrokenPipeError, OSError):
                    pass
            w.kill()
        end = time.monotonic() + 10
        for w in idle:
            w.proc.join(max(0.0, end - time.monotonic()))
            if w.proc.is_alive():
                w.kill()
            else:
                w.conn.close()
        self._slots = []
        if self._busy_since is not None:  # what was left open will not be scored
            self._stats.busy_s += time.monotonic() - self._busy_since
            self._busy_since = None

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ the loop
    def _advance(self, timeout: float, enough: Callable[[], bool]) -> None:
        end = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            self._step(max(0.0, min(end, self._next_deadline()) - time.monotonic()))
            if enough() or time.monotonic() >= end:
                return

    def _step(self, timeout: float) -> None:
        """Hand out jobs, wait up to `timeout` for a message or a death, then settle every
        worker: results in, deadlines enforced, dead or stuck workers replaced."""
        self._dispatch()
        live = [w for w in self._slots if w is not None]
        if live:
            mp_wait([w.conn for w in live] + [w.proc.sentinel for w in live], timeout=timeout)
        elif timeout > 0:
            time.sleep(timeout)
        for i, w in enumerate(self._slots):
            if w is not None:
                self._settle(i, w)
        self._dispatch()
        self._tick()

    def _settle(self, i: int, w: _Worker) -> None:
        now = time.monotonic()
        error, result = None, None
        if w.conn.poll():
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                w.proc.join(1)  # its pipe closes a moment before it can be reaped
                msg, error = None, f"worker died (exit code {w.proc.exitcode})"
            if msg == READY:  # a job's time starts when its worker can score it
                w.ready, w.started = True, now
                return
            if msg is not None and w.job is not None:
                result = msg
            elif error is None:
                return  # nothing for a job (cannot happen: a worker answers only jobs)
        elif not w.proc.is_alive():
            error = f"worker died (exit code {w.proc.exitcode})"
        elif w.ready and w.job is not None and now - w.started > self.limit:
            error = f"timed out after {self.limit:.0f} s; worker and browser killed"
        elif not w.ready and now - w.spawned > self.start_limit:
            error = f"worker did not start within {self.start_limit:.0f} s"
        else:
            return
        job, elapsed = w.job, now - w.started
        w.job = None
        self._conclude(i, w, job, result, error, elapsed)

    def _conclude(self, i: int, w: Any, job: _Job | None, result: dict[str, Any] | None,
                  error: str | None, elapsed: float, restart: bool = True) -> None:
        """A worker's job ended (or the worker failed idle): on an error that takes the worker
        (`restart`), kill and replace it; log the error; record the job's outcome."""
        if error and restart:
            w.kill()
            self._stats.worker_restarts += 1
            # a worker that was up is replaced now (warm for the next job); one that never came
            # up is replaced when a job needs it
            self._slots[i] = self._spawn() if w.ready else None
        if error and job is None:
            log.warning("idle worker: %s", error)
            return
        if error:
            log.warning("%s: %s", job.keys[0], error)
        assert job is not None
        self._finish(job, result, error, elapsed)

    def _finish(self, job: _Job, result: dict[str, Any] | None, error: str | None,
                seconds: float) -> None:
        error = error or (result or {}).get("error")
        self._stats.scored += 1
        self._stats.errors += error is not None
        self._stats.job_s += seconds
        del self._jobs[job.content_hash]
        self._cache[job.content_hash] = (copy.deepcopy(result), error, seconds)
        self._append_cache(job.content_hash, result, error, seconds)
        for k, key in enumerate(job.keys):
            self._done[key] = Done(key, job.content_hash,
                                   result if k == 0 else copy.deepcopy(result), error, seconds)

    def _dispatch(self) -> None:
        for i, w in enumerate(self._slots):
            if not self._queue:
                return
            if w is None:
                w = self._slots[i] = self._spawn()
            if w.job is not None:
                continue
            job = self._queue.popleft()
            w.job, w.started = job, time.monotonic()
            self._send(w, (str(job.path.resolve()), job.content_hash,
                           str((self.artifacts_root / job.content_hash[:16]).resolve()),
                           self.link_base))

    def _send(self, w: Any, msg: tuple[Any, ...]) -> None:
        """Hand a worker its job: SiteScorer.score's arguments (ray_backend overrides this)."""
        try:
            w.conn.send(msg)
        except (BrokenPipeError, OSError):
            pass  # it died: _settle sees that and gives the job its error

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self._cfg_dict)

    def _next_deadline(self) -> float:
        """The soonest moment a worker may need killing; messages and deaths wake us anyway."""
        ends = [w.started + self.limit if w.ready else w.spawned + self.start_limit
                for w in self._slots
                if w is not None and (w.job is not None or not w.ready)]
        return min(ends, default=time.monotonic() + 1.0) + 0.01

    def _tick(self) -> None:
        now, busy = time.monotonic(), bool(self._jobs) and not self._closed
        if busy and self._busy_since is None:
            self._busy_since = now
        elif not busy and self._busy_since is not None:
            self._stats.busy_s += now - self._busy_since
            self._busy_since = None

    # ------------------------------------------------------------ cache file
    def _load_cache(self) -> None:
        p = self.cache_path
        assert p is not None
        if not p.exists():
            return
        data = p.read_bytes()
        if data and not data.endswith(b"\n"):  # killed mid-write: cut the partial line off
            keep = data.rfind(b"\n") + 1
            with open(p, "r+b") as f:
                f.truncate(keep)
            data = data[:keep]
        for raw in data.splitlines():
            try:
                d = json.loads(raw)
                if d["digest"] == self.digest:
                    self._cache[d["content_hash"]] = (d["result"], d["error"], float(d["seconds"]))
            except (ValueError, KeyError, TypeError):
                continue

    def _append_cache(self, chash: str, result: dict[str, Any] | None, error: str | None,
                      seconds: float) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        line = {"digest": self.digest, "content_hash": chash, "result": result, "error": error,
                "seconds": round(seconds, 3)}
        with open(self.cache_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")  # one write, flushed on close

"""score.backend: ray: the RewardPool's workers as Ray actors, on a local or an existing cluster.

    vlmagent score data/sites --out out/r.jsonl --backend ray            (a local cluster)
    vlmagent score data/sites --out out/r.jsonl --backend ray score.ray.address=auto

`RayRewardPool` is a RewardPool (pool.py) whose workers are actors instead of local processes;
everything else is the pool's own: the queue, content-hash dedupe, the result cache and its file,
the stats, submit / poll / wait. So the runner (results.jsonl, resume, report) and WebReward use it
unchanged, and a site gets the same result line from either backend.

Each actor does what a local worker does (worker.py `_worker_main`): it opens one Browser and builds
one Cascade from the config, launches Chromium before its first site, then scores sites one at a
time with `cascade(SiteContext(...)).to_dict()`. Browser start-up is paid once per actor.

Deadlines are the pool's, enforced from the driver: a job's hard wall time (score.site_timeout_s)
counts from when its actor is up, and starting an actor (scheduling it on the cluster, importing,
launching Chromium) has a limit of the same length, counted from its creation. An actor over
either, or one that died, is killed (`ray.kill`: its process goes, its Playwright driver with it,
and Chromium exits when the pipe to that driver closes, as on the local backend) and replaced;
its job gets the same error result as on the local backend ("timed out after N s; worker and
browser killed"), so a hung site never stalls the batch.

The cluster: with score.ray.address empty the pool starts a small local one (num_cpus =
score.ray.num_cpus, or one per worker; on the loopback address only; no dashboard; worker logs
stay in Ray's session folder; its actors reserve no CPUs, so every pool of the process fits) and
shuts it down when the last pool that uses it closes. With an address ("auto", "HOST:6379",
"ray://HOST:10001") it joins that cluster (each actor reserves score.ray.worker_cpus) and only
disconnects at the end. A Ray session the caller opened itself (ray.is_initialized()) is used and
left running. On a cluster of several machines, every node needs this package and Chromium
(scripts/setup.sh), and the site folders and the results folder (screenshots are written beside
it) on the same paths: a shared filesystem. A worker that cannot see its site on another node
fails that job with a message saying so.

Ray is imported only here, only when this backend is chosen; without it the error says how to
install it (the `ray` extra; pinned in requirements/constraints.txt).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlmagent.config import Config, to_dict
from vlmagent.errors import UsageError
from vlmagent.scoring.pool import RewardPool, SiteScorer

log = logging.getLogger("vlmagent.score")

INSTALL_HINT = ("score.backend=ray needs the `ray` package: install the `ray` extra "
                "(pip install -c requirements/constraints.txt -e '.[ray]'; scripts/setup.sh does) "
                "or use --backend local")


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise UsageError(f"{INSTALL_HINT} ({e})") from None
    return ray


# ---------------------------------------------------------------- the cluster
_lock = threading.Lock()
_holders = 0  # open pools on the session this module started (or joined); shut down at zero
_local = False  # that session is a local cluster this module started


def connect(cfg: Config, workers: int) -> bool:
    """Make sure this process is a Ray driver. True: the pool holds a reference on a session this
    module opened and must call release(); False: the caller's own session, left alone."""
    global _holders, _local
    ray = import_ray()
    with _lock:
        if _holders:
            _holders += 1
            return True
        if ray.is_initialized():
            return False
        rc = cfg.score.ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if rc.address:
                log.info("ray: joining the cluster at %s", rc.address)
                ray.init(address=rc.address, **quiet)
            else:
                cpus = rc.num_cpus or max(1, workers)
                log.info("ray: starting a local cluster (%d CPUs)", cpus)
                with loopback_only():  # "local": new, even when $RAY_ADDRESS names one
                    ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
        except Exception as e:
            try:  # whatever half of it came up
                ray.shutdown()
            except Exception:
                pass
            where = f"join the Ray cluster at {rc.address!r} (score.ray.address)" \
                if rc.address else "start a local Ray cluster"
            raise UsageError(f"could not {where}: {type(e).__name__}: {e}") from None
        _holders, _local = 1, not rc.address
        return True


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While a local cluster starts: every part of it on the loopback address, not the address
    Ray would otherwise find for other machines to reach (a single-machine cluster is Ray's mode
    on macOS and Windows; its processes inherit the variable). Ray's default token auth stays
    on; only its notice about that default is not repeated on every run."""
    from ray._private import ray_constants

    var, flag = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER
    old = os.environ.get(var)
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = notice.level
    os.environ[var], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    notice.setLevel(logging.ERROR)
    try:
        yield
    finally:
        notice.setLevel(level)
        ray_constants.ENABLE_RAY_CLUSTER = flag
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old


def local_cluster() -> bool:
    """Whether the open session is a local cluster this module started (this machine only)."""
    return _holders > 0 and _local


def release() -> None:
    global _holders
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0:
            import_ray().shutdown()


# ---------------------------------------------------------------- the actor
class ScoringWorker(SiteScorer):
    """One scoring worker: worker.py's SiteScorer (a Browser and the cascade), made a Ray actor
    by RayRewardPool; a plain class, so the module imports without Ray."""

    def __init__(self, cfg_dict: dict[str, Any], driver_host: str):
        super().__init__(cfg_dict, "<ray worker>")
        self.driver_host = driver_host

    def ready(self) -> tuple[int, str]:
        """Answered once __init__ is done: the worker is up (its pid and node)."""
        return os.getpid(), socket.gethostname()

    def score(self, path: str, chash: str, artifacts: str,
              link_base: str | None) -> dict[str, Any]:
        host = socket.gethostname()
        if host != self.driver_host and not os.path.isdir(path):
            raise FileNotFoundError(
                f"{path} is not on node {host}: score.backend=ray on several machines needs the "
                "sites and the results folder on a filesystem every node shares")
        return super().score(path, chash, artifacts, link_base)


class _RayWorker:
    """A pool slot: the actor and the call in flight (its start-up, then its job)."""

    def __init__(self, ray: Any, actor_cls: Any, cfg_dict: dict[str, Any]):
        self.ray = ray
        self.actor = actor_cls.remote(cfg_dict, socket.gethostname())
        self.ready_ref = self.actor.ready.remote()  # runs after __init__: the READY message
        self.job_ref: Any = None
        self.spawned = time.monotonic()
        self.job: Any = None  # pool.py _Job
        self.started = 0.0
        self.ready = False
        self.pid = 0
        self.node = ""

    def pending(self) -> Any:
        return self.job_ref if self.ready else self.ready_ref

    def kill(self) -> None:
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:  # already gone, or the cluster is: nothing left to stop
            pass


def _died(e: BaseException) -> str:
    first = next((x.strip() for x in str(e).splitlines() if x.strip()), type(e).__name__)
    return f"worker died ({first[:300]})"


def _failed(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    return f"worker failed: {type(cause).__name__}: {str(cause).splitlines()[0][:300]}" \
        if str(cause) else f"worker failed: {type(cause).__name__}"


# ---------------------------------------------------------------- the pool
class RayRewardPool(RewardPool):
    """RewardPool with Ray actors as workers (see the module docstring). The same interface:
    submit, poll, wait, running, stats, close; not thread-safe either."""

    def __init__(self, cfg: Config, workers: int, artifacts_root: Path,
                 link_base: Path | None = None, cache_path: Path | None = None):
        self._ray = import_ray()
        self._owner = connect(cfg, max(1, workers))
        try:
            # On a local cluster started here every actor is on this machine, as local workers
            # are: nothing to place, so they reserve no CPUs (another pool, say WebReward's
            # second scaffold, can start its own). On a cluster, worker_cpus places them.
            cpus = 0 if self._owner and local_cluster() else cfg.score.ray.worker_cpus
            self._actor_cls = self._ray.remote(ScoringWorker).options(
                num_cpus=cpus, max_restarts=0, max_task_retries=0)
            self._actor_cfg = to_dict(cfg)
            super().__init__(cfg, workers, artifacts_root, link_base, cache_path)
        except BaseException:
            if self._owner:
                self._owner = False
                release()
            raise

    # ------------------------------------------------------------ workers
    def _spawn(self) -> _RayWorker:  # type: ignore[override]
        return _RayWorker(self._ray, self._actor_cls, self._actor_cfg)

    def running(self) -> dict[Any, int]:
        """Keys being scored now (their actor is up) -> the actor's pid (on its node)."""
        return {w.job.keys[0]: w.pid for w in self._slots
                if w is not None and w.job is not None and w.ready}

    def _send(self, w: _RayWorker, msg: tuple[Any, ...]) -> None:  # type: ignore[override]
        # queued behind the actor's start-up when it is not up yet, as a pipe would hold it
        w.job_ref = w.actor.score.remote(*msg)

    def _step(self, timeout: float) -> None:
        """Hand out jobs, wait up to `timeout` for a start-up or a result, then settle every
        worker: results in, deadlines enforced, dead or stuck actors replaced."""
        self._dispatch()
        refs = [r for w in self._slots if w is not None for r in [w.pending()] if r is not None]
        done: set[Any] = set()
        if refs:
            self._ray.wait(refs, num_returns=1, timeout=timeout)
            done = set(self._ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        elif timeout > 0:
            time.sleep(timeout)
        for i, w in enumerate(self._slots):
            if w is not None:
                self._settle_ray(i, w, done)
        self._dispatch()
        self._tick()

    def _settle_ray(self, i: int, w: _RayWorker, done: set[Any]) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        now = time.monotonic()
        error, result, restart = None, None, True
        if not w.ready:
            if w.ready_ref in done:
                try:
                    w.pid, w.node = self._ray.get(w.ready_ref)
                    w.ready, w.started = True, now  # a job's time starts when it can be scored
                    return
                except RayActorError as e:  # its __init__ raised, or the process died
                    error = _died(e)
                except RayTaskError as e:
                    error = _failed(e)
            elif now - w.spawned > self.start_limit:
                error = f"worker did not start within {self.start_limit:.0f} s"
            else:
                return
        elif w.job is not None:
            if w.job_ref in done:
                try:
                    result = self._ray.get(w.job_ref)
                except RayActorError as e:
                    error = _died(e)
                except RayTaskError as e:  # the call raised; the actor itself is fine
                    error, restart = _failed(e), False
            elif now - w.started > self.limit:
                error = f"timed out after {self.limit:.0f} s; worker and browser killed"
            else:
                return
        else:
            return  # idle and up: a death shows on its next job
        job, elapsed = w.job, now - w.started
        w.job, w.job_ref = None, None
        self._conclude(i, w, job, result, error, elapsed, restart)

    def close(self) -> None:
        """Stop the actors: idle ones close their browser first, busy or starting ones are
        killed; then the Ray session goes if this pool was the last to use one it opened."""
        if self._closed:
            return
        self._closed = True
        try:
            closing = []
            for w in self._slots:
                if w is None:
                    continue
                if w.ready and w.job is None:
                    try:
                        closing.append(w.actor.close.remote())
                    except Exception:
                        pass
                else:
                    w.kill()
            if closing:
                self._ray.wait(closing, num_returns=len(closing), timeout=10)
            for w in self._slots:
                if w is not None:
                    w.kill()
            self._slots = []
            if self._busy_since is not None:  # what was left open will not be scored
                self._stats.busy_s += time.monotonic() - self._busy_since
                self._busy_since = None
        finally:
            if self._owner:
                self._owner = False
                release()

"""Where the reward workers run (score.backend): `local` worker processes (pool.py RewardPool) or
Ray actors (ray_backend.py RayRewardPool, imported only when chosen). Both are RewardPools: the
runner (`vlmagent score`) and WebReward (online RL) open theirs here."""
from __future__ import annotations

from pathlib import Path

from vlmagent.config import Config
from vlmagent.errors import UsageError
from vlmagent.scoring.pool import RewardPool

BACKENDS = ("local", "ray")


def check_backend(cfg: Config) -> str:
    """cfg.score.backend, once known to be usable here (UsageError otherwise: an unknown name,
    or ray without the package, which the error says how to install)."""
    if cfg.score.backend not in BACKENDS:
        raise UsageError(f"score.backend must be one of {', '.join(BACKENDS)}, "
                         f"got {cfg.score.backend!r}")
    if cfg.score.backend == "ray":
        from vlmagent.scoring.ray_backend import import_ray
        import_ray()
    return cfg.score.backend


def open_pool(cfg: Config, workers: int, artifacts_root: Path, link_base: Path | None = None,
              cache_path: Path | None = None) -> RewardPool:
    """A RewardPool on cfg.score.backend (same arguments as RewardPool)."""
    if check_backend(cfg) == "ray":
        from vlmagent.scoring.ray_backend import RayRewardPool
        return RayRewardPool(cfg, workers, artifacts_root, link_base, cache_path)
    return RewardPool(cfg, workers, artifacts_root, link_base, cache_path)

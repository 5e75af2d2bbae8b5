"""Training data for a step, made deterministically from (seed, stage, step).

Domains generate samples from a seed, so a stage never needs a pre-built dataset and a resumed
stage sees exactly the batches it would have seen. Held-out evaluation samples use a disjoint
seed range. Generated samples are cached on disk under a key that hashes every setting that
changes a sample (see `sample_key`), so a changed pixel budget or kind list makes new ones.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmagent import agent
from vlmagent.config import AgentConfig, Config, StageConfig
from vlmagent.domains import get_domain
from vlmagent.train.common import step_seed
from vlmagent.types import Sample, Trajectory

EVAL_SEED = 1_000_003  # held-out samples: a seed range training never draws from
PROBE_SEED = 2_000_003  # the early-stop probe's samples: disjoint from train and eval


def seen_fn(policy: Any, agent_cfg: AgentConfig):
    return lambda w, h: policy.seen_size(w, h, agent_cfg.min_pixels, agent_cfg.max_pixels)


def dataset_args(cfg: Config) -> dict[str, str]:
    """domain.dataroot / domain.version when set (driving reads a nuScenes folder)."""
    d = cfg.domain
    return {k: v for k, v in (("dataroot", d.dataroot), ("version", d.version)) if v}


def _dataset_stamp(cfg: Config) -> dict[str, list[float]]:
    """Size and mtime of the dataset's sample table: a regenerated dataset makes new samples."""
    d = cfg.domain
    table = Path(d.dataroot or "", d.version or "", "sample.json")
    if not (d.dataroot and d.version and table.exists()):
        return {}
    st = table.stat()
    return {"dataset_stamp": [st.st_size, st.st_mtime]}


def sample_key(cfg: Config, policy: Any, domain: str, n: int, seed: int) -> str:
    """The cache folder name of n samples of `domain` from `seed`: a readable prefix and a hash
    of everything that changes them (domain and its generator version, kinds, image size, the
    pixel budget and the processor's patch factor, which set the size the model sees)."""
    settings = {"domain": domain, "version": get_domain(domain).VERSION, "n": n, "seed": seed,
                "kinds": list(cfg.domain.kinds), "size": cfg.domain.size,
                **({"options": cfg.domain.options} if cfg.domain.options else {}),
                **dataset_args(cfg), **_dataset_stamp(cfg),
                "min_pixels": cfg.agent.min_pixels, "max_pixels": cfg.agent.max_pixels,
                "factor": getattr(policy, "patch_factor", None)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"seed{seed}-n{n}-{digest}"


def samples(cfg: Config, policy: Any, domain: str, n: int, seed: int) -> list[Sample]:
    """n samples of `domain` from `seed`, generated once and then read back from data_dir."""
    mod = get_domain(domain)
    out = Path(cfg.domain.data_dir) / domain / sample_key(cfg, policy, domain, n, seed)
    index = out / "samples.jsonl"
    if index.exists():
        return mod.load_samples(index)
    try:
        made = mod.make_samples(n, seed, out, kinds=tuple(cfg.domain.kinds),
                                size=tuple(cfg.domain.size) if cfg.domain.size else None,
                                seen_size=seen_fn(policy, cfg.agent), **dataset_args(cfg),
                                **cfg.domain.options)
    except TypeError as e:
        if cfg.domain.options and "unexpected keyword" in str(e):
            raise ValueError(f"domain.options: {domain} has no option in "
                             f"{sorted(cfg.domain.options)} ({e})") from None
        raise
    tmp = index.with_suffix(f".{os.getpid()}.tmp")  # ranks may race: each writes its own
    mod.save_samples(made, tmp)
    tmp.replace(index)  # atomic: a half-written index is never read
    return made


def train_samples(cfg: Config, policy: Any, stage: StageConfig, step: int, n: int
                  ) -> list[Sample]:
    """The step's n samples: one of n_train // n fixed batches, chosen by the step's seed."""
    pool = max(1, (stage.n_train or n) // n)
    pick = step_seed(cfg.train.seed, stage.name, step) % pool
    return samples(cfg, policy, stage.domain, n, cfg.train.seed * 7919 + pick)


def expert_episodes(cfg: Config, policy: Any, batch: Sequence[Sample], domain: str,
                    offset: int = 0, seed: int | None = None,
                    progress: Callable[[int], None] | None = None) -> list[Trajectory]:
    """Scripted expert episodes of `batch` (dual-mode SFT data): sample i in tool mode when
    i + offset is even, else text mode, unless agent.force_mode fixes the mode for all or the
    domain's `expert_mode(sample)` picks each sample's mode."""
    mod = get_domain(domain)
    seen = seen_fn(policy, cfg.agent)
    modes = {s.id: ("tool" if (i + offset) % 2 == 0 else "text") for i, s in enumerate(batch)}
    if cfg.agent.force_mode != "none":
        modes = dict.fromkeys(modes, cfg.agent.force_mode)
    elif hasattr(mod, "expert_mode"):  # the domain's expert knows each sample's mode (zoomres:
        modes = {s.id: mod.expert_mode(s) for s in batch}  # ask for full resolution when needed)
    actor = agent.ScriptedActor(policy, lambda ep: mod.expert_turns(
        ep.sample, modes[ep.sample.id], seen, cfg.agent.format))
    if not (cfg.agent.expert_hints and cfg.agent.force_mode == "none"):
        return agent.rollout(policy, batch, cfg.agent, actor=actor, seed=seed, progress=progress)
    # every other episode of each mode has the forced-mode hint in its prompt: the policy learns
    # to follow the hint that forced-mode RL (mode_groups) gives, and to choose without one
    hint = [((i + offset) // 2) % 2 == 0 for i in range(len(batch))]
    out: list[Trajectory | None] = [None] * len(batch)
    for force in ("none", "tool", "text"):
        idx = [i for i, s in enumerate(batch)
               if (modes[s.id] if hint[i] else "none") == force]
        if idx:
            acfg = replace(cfg.agent, force_mode=force)
            for i, t in zip(idx, agent.rollout(policy, [batch[i] for i in idx], acfg,
                                               actor=actor, seed=seed, progress=progress)):
                out[i] = t
    return out  # type: ignore[return-value]

"""Training data for a step, made deterministically from (seed, stage, step).

Domains generate samples from a seed, so a stage never needs a pre-built dataset and a resumed
stage sees exactly the batches it would have seen. Held-out evaluation samples use a disjoint
seed range.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlmagent import agent
from vlmagent.config import AgentConfig, Config, StageConfig
from vlmagent.domains import get_domain
from vlmagent.train.common import step_seed
from vlmagent.types import Sample, Trajectory

EVAL_SEED = 1_000_003  # held-out samples: a seed range training never draws from


def seen_fn(policy: Any, agent_cfg: AgentConfig):
    return lambda w, h: policy.seen_size(w, h, agent_cfg.min_pixels, agent_cfg.max_pixels)


def samples(cfg: Config, policy: Any, domain: str, n: int, seed: int) -> list[Sample]:
    """n samples of `domain` from `seed`, generated once and then read back from data_dir."""
    mod = get_domain(domain)
    out = Path(cfg.domain.data_dir) / domain / f"seed{seed}-n{n}"
    index = out / "samples.jsonl"
    if index.exists():
        return mod.load_samples(index)
    made = mod.make_samples(n, seed, out, kinds=tuple(cfg.domain.kinds),
                            size=tuple(cfg.domain.size) if cfg.domain.size else None,
                            seen_size=seen_fn(policy, cfg.agent))
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


def expert_trajectories(cfg: Config, policy: Any, batch: list[Sample], domain: str,
                        step: int) -> list[Trajectory]:
    """Scripted expert episodes, tool and text mode alternating (dual-mode SFT data)."""
    mod = get_domain(domain)
    seen = seen_fn(policy, cfg.agent)
    modes = {s.id: ("tool" if (i + step) % 2 == 0 else "text") for i, s in enumerate(batch)}
    if cfg.agent.force_mode != "none":
        modes = dict.fromkeys(modes, cfg.agent.force_mode)
    actor = agent.ScriptedActor(policy, lambda ep: mod.expert_turns(
        ep.sample, modes[ep.sample.id], seen, cfg.agent.format))
    return agent.rollout(policy, batch, cfg.agent, actor=actor)

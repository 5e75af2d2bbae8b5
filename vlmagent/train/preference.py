"""Offline preference RL: MPO (0.8 DPO + 0.2 BCO + 1.0 SFT, InternVL3.5) or plain DPO.

Pairs come from a file (`data:` a JSONL of {"chosen": trajectory, "rejected": trajectory}
records as written by vlmagent.trajectory) or are built from the current policy's own rollouts,
scored by the stage's reward: the best and the worst of each group whose rewards differ.
The reference is frozen at the start of the stage (LoRA disabled, or a copy of full weights).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from vlmagent import trajectory
from vlmagent.config import Config
from vlmagent.losses import dpo_loss, mpo_loss
from vlmagent.train.common import (
    StageRun,
    full_weights,
    micro_batches,
    pad_masked,
    shard,
    step_seed,
)
from vlmagent.train.online import Reference, _global_sum, sample_groups
from vlmagent.types import Trajectory


def load_pairs(stage: Any) -> list[tuple[Trajectory, Trajectory]] | None:
    if not stage.data:
        return None
    path = Path(stage.data)
    with open(path, encoding="utf-8") as f:
        return [(trajectory.from_record(d["chosen"], path.parent),
                 trajectory.from_record(d["rejected"], path.parent))
                for d in map(json.loads, f) if d]


def policy_pairs(run: StageRun, cfg: Config) -> list[tuple[Trajectory, Trajectory]]:
    """Best vs worst rollout of every group with a reward spread (this rank's prompts)."""
    trajs, rewards, _ = sample_groups(run, cfg)
    run.last_sampled = trajs  # a rank without pairs takes one for its zero-weight forwards
    g, pairs = run.stage.group_size, []
    for i in range(0, len(trajs), g):
        r = rewards[i:i + g]
        if max(r) > min(r):
            pairs.append((trajs[i + r.index(max(r))], trajs[i + r.index(min(r))]))
    return pairs


def _seq_logps(lps: list[torch.Tensor], trajs: list[Trajectory]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    lp, mask = pad_masked(lps, [t.loss_mask for t in trajs])
    return (lp * mask).sum(1), mask.sum(1)  # [B] sums over policy tokens, [B] lengths


def preference_step(run: StageRun, cfg: Config, data: Any) -> dict[str, float]:
    st = run.stage
    if run.reference is None:
        run.reference = Reference(run.policy, bool(st.reference_offload))
    # FSDP: rollouts and the reference run on whole (gathered) weights; training on the shards
    gathered = contextlib.ExitStack()
    gathered.enter_context(full_weights(run.policy))
    if data:
        start = step_seed(cfg.train.seed, st.name, run.step) % len(data)
        pairs = shard([data[(start + i) % len(data)] for i in range(st.batch_size)], run.acc)
        spare = pairs[:1] or [data[start]]  # every rank has the data: a rank without pairs too
    else:
        pairs = policy_pairs(run, cfg)
        spare = pairs[:1] or [(t, t) for t in run.last_sampled[:1]]
    total = _global_sum(run, len(pairs))
    metrics: dict[str, float] = {"pairs": float(total)}
    if total == 0:
        gathered.close()
        return metrics  # no group had a reward spread anywhere: nothing to prefer this step
    # micro-batches of pairs (chosen and rejected together) by padded tokens; every term is a
    # mean over pairs, so a part's loss weighted by its share of the pairs sums to the whole
    parts = micro_batches([2 * max(len(c.token_ids), len(r.token_ids)) for c, r in pairs],
                          st.micro_batch_tokens)
    with run.reference.visit():  # the reference scores each micro-batch once, before training
        refs = [_ref_logps(run, [pairs[i] for i in idx]) for idx in parts]
    gathered.close()
    # every rank runs as many wrapped forwards as the rank with the most micro-batches (zero-
    # weight ones on a spare pair's chosen episode), so none waits on the others
    count = run.micro_count(len(parts))
    done = []
    for k, idx in enumerate(parts):
        loss, m = _pair_loss(run, [pairs[i] for i in idx], refs[k])
        w = len(idx) / len(pairs)
        run.backward(loss * (w * len(pairs) / total), "sum", last=k == count - 1)
        done.append((w, m))
    run.pad_backward([trajectory.context(c) for c, _ in spare], len(parts), count)
    m = {key: sum(w * mk[key] for w, mk in done) for key in done[0][1]} if done else {}
    m["grad_norm"] = run.optimizer_step(reduction="sum")
    return {**metrics, **m}


def _ref_logps(run: StageRun, pairs: list[tuple[Trajectory, Trajectory]]) -> torch.Tensor:
    """The reference's sequence log-probs of some pairs: [chosen..., rejected...]."""
    both = [c for c, _ in pairs] + [r for _, r in pairs]
    lps = run.reference.logprobs([trajectory.context(t) for t in both], run.stage.temperature)
    return _seq_logps(lps, both)[0]


def _pair_loss(run: StageRun, pairs: list[tuple[Trajectory, Trajectory]], ref: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO / MPO loss of some pairs (their mean) and its metrics; `ref` from _ref_logps."""
    st = run.stage
    chosen, rejected = [c for c, _ in pairs], [r for _, r in pairs]
    both = [trajectory.context(t) for t in chosen + rejected]
    n = len(pairs)
    pol, lengths = _seq_logps(run.policy.logprobs(both, st.temperature), chosen + rejected)
    ref = ref.to(pol)
    if st.kind == "dpo":
        return dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], beta=st.beta)
    return mpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], lengths[:n], beta=st.beta)

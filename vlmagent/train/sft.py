"""SFT on trajectories: loss on the policy's own tokens only, images attached to their turns.

Data: scripted expert episodes of the stage's domain (both thinking modes), generated per step
from the seed, or a trajectory JSONL (`data:`), e.g. from `vlmagent rollout --policy expert`.
"""
from __future__ import annotations

from typing import Any

from vlmagent import trajectory
from vlmagent.config import Config
from vlmagent.losses import sft_loss
from vlmagent.train.common import StageRun, pad_masked, shard, step_seed
from vlmagent.train.data import expert_episodes, train_samples


def sft_step(run: StageRun, cfg: Config, data: list[Any] | None) -> dict[str, float]:
    st = run.stage
    if data is not None:  # a fixed trajectory file: deterministic batches by step
        n = len(data)
        start = step_seed(cfg.train.seed, st.name, run.step) % n
        trajs = [data[(start + i) % n] for i in range(st.batch_size)]
    else:
        with run.acc.main_process_first():
            batch = train_samples(cfg, run.policy, st, run.step, st.batch_size)
        trajs = expert_episodes(cfg, run.policy, batch, st.domain, run.step)
    mine = shard(trajs, run.acc)
    logps = run.policy.logprobs([trajectory.context(t) for t in mine])
    lp, mask = pad_masked(logps, [t.loss_mask for t in mine])
    loss, metrics = sft_loss(lp, mask)
    share = run.global_share(float(mask.sum()))  # token-level mean over the whole batch
    metrics["grad_norm"] = run.update(loss * share, reduction="sum")
    metrics["tokens"] = float(mask.sum())
    metrics["tool_call_rate"] = sum(t.n_tool_calls > 0 for t in trajs) / len(trajs)
    return metrics


def load_data(st: Any) -> list[Any] | None:
    return trajectory.load(st.data) if st.data else None

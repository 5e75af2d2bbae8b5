"""SFT on trajectories: loss on the policy's own tokens only, images attached to their turns.

Data: scripted expert episodes of the stage's domain (both thinking modes), generated per step
from the seed, or a trajectory JSONL (`data:`), e.g. from `vlmagent rollout --policy expert`.
"""
from __future__ import annotations

from typing import Any

from vlmagent import trajectory
from vlmagent.config import Config
from vlmagent.losses import sft_loss
from vlmagent.train.common import StageRun, micro_batches, pad_masked, shard, step_seed
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
    tokens = float(sum(sum(t.loss_mask[1:]) for t in mine))
    share = run.global_share(tokens)  # token-level mean over the whole batch
    # micro-batches by padded tokens, gradients accumulated: each part's mean weighted by its
    # share of the rank's tokens, so the summed gradient is the one-batch one
    parts = micro_batches([len(t.token_ids) for t in mine], st.micro_batch_tokens)
    count = run.micro_count(len(parts))  # the same on every rank (padded with zero ones)
    loss_sum = 0.0
    for k, idx in enumerate(parts):
        if k + 1 < len(parts):  # placement.vision=process: the next part encodes meanwhile
            run.policy.prefetch([trajectory.context(mine[i]) for i in parts[k + 1]])
        sub = [mine[i] for i in idx]
        lp, mask = pad_masked(run.policy.logprobs([trajectory.context(t) for t in sub]),
                              [t.loss_mask for t in sub])
        loss, _ = sft_loss(lp, mask)
        w = float(mask.sum()) / max(tokens, 1.0)
        run.backward(loss * (w * share), "sum", last=k == count - 1)
        loss_sum += w * loss.item()
    run.pad_backward([trajectory.context(t) for t in (mine or trajs)[:1]], len(parts), count)
    metrics = {"loss": loss_sum, "num_tokens": tokens, "micro_batches": float(len(parts))}
    metrics["grad_norm"] = run.optimizer_step(reduction="sum")
    metrics["tokens"] = tokens
    metrics["tool_call_rate"] = sum(t.n_tool_calls > 0 for t in trajs) / len(trajs)
    return metrics


def load_data(st: Any) -> list[Any] | None:
    return trajectory.load(st.data) if st.data else None

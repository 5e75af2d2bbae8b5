"""Online RL (GRPO / GSPO) and the rollout plumbing the preference stage shares.

One step: G rollouts per prompt through the agent loop (the same loop as evaluation), rewards
from the episode reward (rewards/episode.py: the domain's check of the final answer, a tool
bonus only when it is right, mode terms, ...), group advantages, then `epochs_per_batch`
optimiser passes against the SAMPLED log-probs (exact tokens: nothing is re-tokenised).
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import replace
from typing import Any

import torch

from vlmagent import agent, trajectory
from vlmagent.config import Config
from vlmagent.domains import get_domain
from vlmagent.engines import training as rollout_engine
from vlmagent.losses import group_advantages, grpo_loss, gspo_loss
from vlmagent.rewards.episode import RewardTerms, final_text, record, score_episodes
from vlmagent.train.common import (
    StageRun,
    full_weights,
    micro_batches,
    pad_masked,
    shard,
    step_seed,
)
from vlmagent.train.data import train_samples
from vlmagent.types import Trajectory


def sample_groups(run: StageRun, cfg: Config) -> tuple[list[Trajectory], list[float], list[Any]]:
    """This rank's rollouts (groups contiguous), their rewards and samples."""
    st = run.stage
    with run.acc.main_process_first():
        prompts = train_samples(cfg, run.policy, st, run.step, st.batch_size)
    mine = shard(prompts, run.acc)
    base = replace(cfg.agent, max_new_tokens=st.max_new_tokens, temperature=st.temperature)
    seed = step_seed(cfg.train.seed, st.name, run.step) + 7919 * run.acc.process_index
    g = st.group_size
    domain = get_domain(st.domain)
    samples = [s for s in mine for _ in range(g)]
    scorer = _answer_batch(run, cfg, samples) if hasattr(domain, "score_answers") else None
    actor = rollout_engine.actor_for(run, cfg)  # rollout server (weights synced); None: local
    if st.mode_groups:  # half of each group forced into tool mode, half into text mode
        half = g // 2
        tool = agent.rollout(run.policy, mine, replace(base, force_mode="tool"), seed=seed,
                             group_size=half, actor=actor)
        text = agent.rollout(run.policy, mine, replace(base, force_mode="text"),
                             seed=seed + 1, group_size=g - half, actor=actor)
        trajs = []
        for i in range(len(mine)):
            trajs += tool[i * half:(i + 1) * half] + text[i * (g - half):(i + 1) * (g - half)]
    else:
        # in chunks of rollout_chunk prompts: a slow reward scores one chunk's episodes (each
        # as soon as it ends) while the next chunk generates
        chunk = st.rollout_chunk or len(mine) or 1
        trajs = []
        for c in range(0, len(mine), chunk):
            off = len(trajs)
            on_done = scorer.on_done(off) if scorer and st.overlap_scoring else None
            trajs += agent.rollout(run.policy, mine[c:c + chunk], base,
                                   seed=seed + 104_729 * (c // chunk), group_size=g,
                                   on_done=on_done, actor=actor)
    answers = scorer.answers([final_text(t) for t in trajs]) if scorer else None
    scores = score_episodes(trajs, samples, RewardTerms.from_stage(st), domain, group_size=g,
                            answers=answers)
    record(trajs, scores)
    return trajs, [r.reward for r in scores], samples


def _answer_batch(run: StageRun, cfg: Config, samples: list[Any]) -> Any:
    """This step's answers on the stage's WebReward (one per stage and rank, made on first use;
    its cache file survives a resume)."""
    from vlmagent.rewards.web import AnswerBatch, WebReward

    if run.web is None:
        rank = run.acc.process_index
        run.web = WebReward(cfg, run.out / f"reward_work-rank{rank}",
                            cache_path=run.out / f"reward_cache-rank{rank}.jsonl")
    return AnswerBatch(run.web, samples, prefix=f"s{run.step}")


def sampled_logps(trajs: list[Trajectory], like: torch.Tensor) -> torch.Tensor:
    """Sampled logps laid out as `like` [B, T] (token t at column t-1, where its mask is 1)."""
    out = torch.zeros_like(like)
    for b, t in enumerate(trajs):
        pos = [p - 1 for p, m in enumerate(t.loss_mask) if m]
        out[b, pos] = torch.tensor(t.logps, dtype=out.dtype)
    return out


class Reference:
    """The frozen reference: the base with LoRA disabled (no extra memory), or a frozen copy of
    full weights. `offload`: the copy lives on CPU and visits the policy's device only while it
    scores (`visit`), so a full fine-tune holds one model on the accelerator, not two."""

    def __init__(self, policy: Any, offload: bool = False):
        self.policy = policy
        self.copy = None
        self.offload = offload
        self._visiting = False
        if not hasattr(policy.model, "disable_adapter"):
            model = copy.deepcopy(policy.model).eval()
            if offload:
                model.to("cpu")
            self.copy = type(policy)(model, policy.processor)
            for p in self.copy.model.parameters():
                p.requires_grad_(False)

    @contextlib.contextmanager
    def visit(self) -> Any:
        """An offloaded copy on the policy's device for the calls inside, back on CPU after."""
        if self.copy is None or not self.offload or self._visiting:
            yield
            return
        self._visiting = True
        self.copy.model.to(self.policy.device)
        try:
            yield
        finally:
            self.copy.model.to("cpu")
            self._visiting = False

    @torch.no_grad()
    def logprobs(self, contexts: list[Any], temperature: float = 1.0) -> list[torch.Tensor]:
        if self.copy is not None:
            with self.visit():
                return self.copy.logprobs(contexts, temperature)
        ctx = self.policy.model.disable_adapter()
        with ctx if ctx is not None else contextlib.nullcontext():
            return self.policy.logprobs(contexts, temperature)


def online_step(run: StageRun, cfg: Config, data: Any) -> dict[str, float]:
    st, t0 = run.stage, time.perf_counter()
    if st.kl_coef and run.reference is None:  # (a gspo stage has kl_coef 0: resolve_stages)
        run.reference = Reference(run.policy, bool(st.reference_offload))
    # FSDP: rollouts, the reference and the old log-probs run on whole (gathered) weights, no
    # collectives inside however many calls each rank makes; training runs on the shards
    gathered = contextlib.ExitStack()
    gathered.enter_context(full_weights(run.policy))
    trajs, rewards, _ = sample_groups(run, cfg)
    g = st.group_size
    adv = group_advantages(torch.tensor(rewards), g)
    keep = list(range(len(trajs)))
    if st.drop_equal_groups:  # DAPO dynamic sampling: a group with one reward teaches nothing
        r = torch.tensor(rewards).view(-1, g)
        live = (r.max(1).values - r.min(1).values) > 0
        keep = [i for i in keep if live[i // g]]
    metrics = _rollout_metrics(trajs, time.perf_counter() - t0)
    if run.web is not None:  # webgen: the WebGen-R1 numbers and the reward pool's throughput
        metrics.update(_web_metrics(trajs, run.web))
    metrics["groups_kept"] = len(keep) / max(1, len(trajs))
    batch = [trajs[i] for i in keep]
    # Every rank must make the same optimiser steps (the gradient all-reduce is collective):
    # ranks weight their loss by their share of the global batch and gradients are summed.
    units = _units(st, batch)
    total_units = _global_sum(run, units)  # one collective, on every rank
    if total_units == 0:
        gathered.close()
        return metrics  # no group on any rank had a reward spread: nothing to learn this step
    share = units / total_units
    a = adv[keep].to(run.policy.device)
    contexts = [trajectory.context(t) for t in batch]
    # micro-batches of at most micro_batch_tokens padded tokens, gradients accumulated: each
    # part's loss weighted by its share of the rank's units, so the sum is the one-batch loss
    parts = micro_batches([len(c.token_ids) for c in contexts], st.micro_batch_tokens)
    refs: list[Any] = [None] * len(parts)
    if st.kl_coef and batch:  # the reference scores each micro-batch once, before the epochs
        with run.reference.visit():  # an offloaded copy comes over once for all of them
            refs = [pad_masked(run.reference.logprobs([contexts[i] for i in idx],
                                                      st.temperature),
                               [batch[i].loss_mask for i in idx])[0] for idx in parts]
    # ---- rollout server only (engines/training.py, docs/rollout_server.md): the trainer's own
    # old logps before any update (the PPO anchor), the train-vs-rollout gap, TIS weights
    fixes = rollout_engine.off_policy(run, cfg, batch, contexts, parts)  # None each: local
    metrics.update(rollout_engine.gap_metrics(run, fixes))
    # ----
    gathered.close()
    # every rank runs as many wrapped forwards as the rank with the most micro-batches (a rank
    # that kept nothing: all zero-weight, on one of its sampled episodes), so none waits
    count = run.micro_count(len(parts))
    spare = [trajectory.context(t) for t in (batch or trajs)[:1]]
    m: dict[str, float] = {}
    for _ in range(st.epochs_per_batch):
        done = []
        for k, idx in enumerate(parts):
            if k + 1 < len(parts):  # placement.vision=process: the next part encodes meanwhile
                run.policy.prefetch([contexts[i] for i in parts[k + 1]])
            sub = [batch[i] for i in idx]
            loss, mk = _policy_loss(run, sub, [contexts[i] for i in idx], a[idx], refs[k],
                                    fixes[k])
            w = _units(st, sub) / units
            run.backward(loss * (w * share), "sum", last=k == count - 1)
            done.append((w, mk))
        run.pad_backward(spare, len(parts), count)
        if not done:  # this rank kept nothing: its zero contribution kept the ranks in step
            run.optimizer_step(reduction="sum")
            continue
        m = {key: sum(w * mk[key] for w, mk in done) for key in done[0][1]}
        m["grad_norm"] = run.optimizer_step(reduction="sum")
        m["micro_batches"] = float(len(parts))
    metrics.update(m)
    metrics["global_units"] = total_units
    metrics["step_s"] = time.perf_counter() - t0
    return metrics


def _units(st: Any, batch: list[Trajectory]) -> int:
    """What the loss averages over: policy tokens (token-level GRPO) or sequences."""
    if st.token_level and st.kind == "grpo":
        return sum(sum(t.loss_mask) for t in batch)
    return len(batch)


def _policy_loss(run: StageRun, batch: list[Trajectory], contexts: list[Any], adv: torch.Tensor,
                 ref: torch.Tensor | None, fix: Any = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO / GSPO loss of one micro-batch (its own mean) and its metrics. `fix`
    (rollout server): the trainer's old logps replace the sampled ones, TIS weights apply."""
    st = run.stage
    lp, mask = pad_masked(run.policy.logprobs(contexts, st.temperature),
                          [t.loss_mask for t in batch])
    old = sampled_logps(batch, lp.detach()) if fix is None else fix.old.to(lp)
    w = None if fix is None or fix.weights is None else fix.weights.to(lp)
    if st.kind == "gspo":
        return gspo_loss(lp, old, adv, mask, st.eps_low, st.eps_high, is_weights=w)
    return grpo_loss(lp, old, adv, mask, st.eps_low, st.eps_high, ref_logps=ref,
                     kl_coef=st.kl_coef, token_level=st.token_level, is_weights=w)


def _web_metrics(trajs: list[Trajectory], web: Any) -> dict[str, float]:
    web_terms = [t.meta.get("web", {}) for t in trajs]  # rewards/web.py brief()
    n = max(1, len(trajs))
    out = {f"web/{k}": sum(w.get(k, 0.0) for w in web_terms) / n
           for k in ("functional", "rendered", "aesthetic")}
    out["web/scored"] = float(web.scored)  # projects scored so far this stage (not cached)
    out["web/wait_s"] = web.busy_s  # time steps spent waiting for rewards, so far
    return out


def _global_sum(run: StageRun, units: float) -> float:
    if run.acc.num_processes == 1:
        return float(units)
    return float(run.acc.reduce(torch.tensor([float(units)], device=run.acc.device),
                                reduction="sum"))


def _rollout_metrics(trajs: list[Trajectory], seconds: float) -> dict[str, float]:
    n = len(trajs)
    tokens = sum(sum(t.loss_mask) for t in trajs)
    modes = [t.mode for t in trajs]
    lps = [x for t in trajs for x in (t.logps or [])]
    return {"entropy": -sum(lps) / max(1, len(lps)),  # Monte-Carlo: -mean sampled logp
            "reward": sum(t.reward for t in trajs) / n,
            "accuracy": sum(t.meta["accuracy"] for t in trajs) / n,
            "tool_calls_per_episode": sum(t.n_tool_calls for t in trajs) / n,
            "tool_mode_share": modes.count("tool") / n, "text_mode_share": modes.count("text") / n,
            "rollout_tokens_per_s": tokens / max(seconds, 1e-9)}

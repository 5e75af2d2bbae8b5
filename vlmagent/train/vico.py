"""ViCO (InternVL3.5): the two stages behind the learned visual-resolution router.

`vico`, consistency: the policy sees each prompt image at a level drawn at random from
`agent.router.levels`; a frozen reference (the policy as the stage started: LoRA disabled, or a
frozen copy of full weights) sees it at level 0. Both read the same expert answer (text mode,
the domain's scripted answer), and the loss is the token-level KL(reference || policy) over the
answer's tokens, summed over the vocabulary, averaged over tokens. The policy learns to answer
from a cheap image as it would from the full one, wherever the cheap image still holds the
answer; where it does not, the KL stays high, and that is the signal the router learns from.

`router`: the policy and its vision tower stay as they are; a linear head (router/learned.py)
on the pooled vision features of the LOW-level image learns whether the low level suffices.
Labels come from the policy's own losses: for each image r = NLL(answer | low) / NLL(answer |
full), and the low level suffices when r < tau, tau = the `router.percentile`-th percentile of
a sliding window of the last `router.window` ratios (InternVL3.5 leaves the percentile
unpublished; the fraction of images sent low follows it, so it is the token budget's knob).
The head is trained with cross-entropy; at the stage's last step its decision threshold is
calibrated on the window's images to send the percentile's share low, and it is saved to
OUTPUT/<stage>/router/ (then removed from the model, like the warm-up's heads).
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlmagent import trajectory
from vlmagent.config import Config
from vlmagent.router.learned import LearnedRouter, new_head, pooled_features
from vlmagent.train.common import StageRun, pad_masked, shard, step_seed
from vlmagent.train.data import expert_episodes, train_samples
from vlmagent.train.online import Reference

HEAD = "router_head"


def at_level(cfg: Config, level: int) -> Config:
    """The config with every image at `level` and the expert answering in text mode."""
    router = replace(cfg.agent.router, kind="fixed", fixed_level=level)
    return replace(cfg, agent=replace(cfg.agent, router=router, force_mode="text"))


def _episodes(run: StageRun, cfg: Config, level: int, batch: list[Any]) -> list[Any]:
    return expert_episodes(at_level(cfg, level), run.policy, batch, run.stage.domain, run.step)


def vico_step(run: StageRun, cfg: Config, data: Any) -> dict[str, float]:
    st, policy = run.stage, run.policy
    if run.reference is None:
        run.reference = Reference(policy, bool(st.reference_offload))
    with run.acc.main_process_first():
        batch = shard(train_samples(cfg, policy, st, run.step, st.batch_size), run.acc)
    rng = random.Random(step_seed(cfg.train.seed, st.name, run.step))
    levels = [rng.randrange(len(cfg.agent.router.levels)) for _ in batch]
    full = _episodes(run, cfg, 0, batch)
    mine: list[Any] = [None] * len(batch)
    for lv in sorted(set(levels)):  # one rollout per level drawn, not one per sample
        idx = [i for i, x in enumerate(levels) if x == lv]
        for i, t in zip(idx, _episodes(run, cfg, lv, [batch[i] for i in idx])):
            mine[i] = t
    masks = [t.loss_mask for t in mine]
    with torch.no_grad():
        ref = _ref_dists(run.reference, [trajectory.context(t) for t in full],
                         [t.loss_mask for t in full])
    pol = policy.log_dists([trajectory.context(t) for t in mine], masks)
    # KL(ref || policy) per token, summed over the vocabulary: [k_i] per episode
    kls = [(r.exp() * (r - p)).sum(-1) for r, p in zip(ref, pol)]
    tokens = sum(int(k.numel()) for k in kls)
    loss = torch.cat(kls).sum() / max(1, tokens) * run.global_share(float(tokens))
    low = [k.mean().item() for k, lv in zip(kls, levels) if lv > 0]
    metrics = {"loss": loss.item(), "kl_low": float(np.mean(low)) if low else 0.0,
               "tokens": float(tokens)}
    metrics["grad_norm"] = run.update(loss, reduction="sum")
    return metrics


def _ref_dists(ref: Reference, contexts: list[Any], masks: list[list[int]]
               ) -> list[torch.Tensor]:
    if ref.copy is not None:
        with ref.visit():
            return ref.copy.log_dists(contexts, masks)
    with ref.policy.model.disable_adapter():
        return ref.policy.log_dists(contexts, masks)


def prepare(stage: Any, policy: Any) -> None:
    """Attach a fresh router head (before the stage's optimiser is built); idempotent."""
    if not hasattr(policy.core, HEAD):
        policy.core.add_module(HEAD, new_head(policy))


def router_step(run: StageRun, cfg: Config, data: Any) -> dict[str, float]:
    st, policy = run.stage, run.policy
    rcfg = cfg.agent.router
    low = len(rcfg.levels) - 1
    window: deque = run.__dict__.setdefault("ratios", deque(maxlen=rcfg.window))
    with run.acc.main_process_first():
        batch = shard(train_samples(cfg, policy, st, run.step, st.batch_size), run.acc)
    with torch.no_grad():  # the policy's losses at both levels: labels, not gradients
        nll = {}
        for level in (0, low):
            eps = _episodes(run, cfg, level, batch)
            lp, mask = pad_masked(policy.logprobs([trajectory.context(t) for t in eps]),
                                  [t.loss_mask for t in eps])
            nll[level] = -(lp * mask).sum(1) / mask.sum(1).clamp(min=1)
        ratio = (nll[low] / nll[0].clamp(min=1e-6)).tolist()
        window.extend(ratio)
        tau = float(np.percentile(list(window), rcfg.percentile))
        labels = torch.tensor([0 if r >= tau else 1 for r in ratio], device=policy.device)
        feats = pooled_features(policy, [t.images[0] for t in eps])  # the low-level prompt image
    recent: deque = run.__dict__.setdefault("feats", deque(maxlen=rcfg.window))
    recent.extend(feats.detach())
    head = getattr(policy.core, HEAD)
    logits = head(feats.detach())
    loss = F.cross_entropy(logits, labels)
    metrics = {"loss": loss.item(), "tau": tau, "low_rate": float(labels.float().mean()),
               "acc": float((logits.argmax(1) == labels).float().mean()),
               "ratio_mean": float(np.mean(ratio))}
    metrics["grad_norm"] = run.update(loss)
    if run.step + 1 >= st.steps:  # the last step: save the head on its own, drop it from the model
        p_full = calibrate(head, recent, rcfg.percentile)
        metrics["p_full"] = p_full
        if run.acc.is_main_process:
            LearnedRouter(head, policy, low, p_full).save_pretrained(
                run.out / "router", levels=rcfg.levels, percentile=rcfg.percentile,
                stage=st.name)
        delattr(policy.core, HEAD)
    return metrics


@torch.no_grad()
def calibrate(head: torch.nn.Module, feats: Any, percentile: float) -> float:
    """The decision threshold on P(full) at which the head sends the labelled share of the
    window's images low (`percentile` %): where some plain images really lose more at the low
    level, labels differ from seed to seed and a 0.5 threshold sent 34-48% of images to full
    against 40% labelled; the threshold keeps the share the percentile asks for."""
    p = head(torch.stack(list(feats))).float().softmax(-1)[:, 0]
    return float(torch.quantile(p, percentile / 100.0))


def load_data(stage: Any) -> None:
    return None

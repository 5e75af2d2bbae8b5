"""Pure tensor losses for the training stages: SFT, DPO, BCO, MPO, GRPO/DAPO, GSPO.

Every loss takes tensors and floats (never a config), returns ``(loss_to_minimise, metrics)`` with
``metrics`` a dict of python floats, and treats ``old_*``/``ref_*`` inputs and advantages as
constants (detached). Masked-out positions are zeroed *before* any ``exp`` so that padding
values (even -inf) can never leak NaN into the loss or its gradient. Formulas: docs/training.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Metrics = dict[str, float]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is nonzero; 0 (not NaN) where nothing is kept."""
    keep = mask.bool().expand_as(x)
    total = torch.where(keep, x, torch.zeros_like(x))
    count = keep.to(x.dtype)
    if dim is None:
        return total.sum() / count.sum().clamp(min=1.0)
    return total.sum(dim) / count.sum(dim).clamp(min=1.0)


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (always >= 0).

    Schulman, "Approximating KL divergence" (2020); as in DeepSeekMath GRPO and TRL. Pure: the
    caller decides what to detach.
    """
    d = ref_logps - logps  # [B, T]
    return torch.exp(d) - d - 1.0


def _masked_diff(a: Tensor, b: Tensor, keep: Tensor) -> Tensor:
    """a - b where keep, else 0: no exp of padding garbage, so no inf/NaN in forward or backward."""
    return torch.where(keep, a - b, torch.zeros_like(a))


def _check_tokens(logps: Tensor, mask: Tensor, advantages: Tensor | None,
                  **others: Tensor | None) -> None:
    shape = tuple(logps.shape)
    if logps.dim() != 2 or mask.shape != logps.shape:
        raise ValueError(f"logps and mask must both be [B, T]; got {shape} and {tuple(mask.shape)}")
    for name, t in others.items():
        if t is not None and t.shape != logps.shape:
            raise ValueError(f"{name} must have the shape of logps {shape}; got {tuple(t.shape)}")
    if advantages is not None and advantages.shape != logps.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{shape[0]}]; got {tuple(advantages.shape)}")


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6,
                     scale_by_std: bool = True) -> Tensor:
    """GRPO group-relative advantages (DeepSeekMath, Shao et al. 2024, eq. 3; GSPO uses the same).

    rewards [B] in consecutive groups of ``group_size`` -> [B]: (r - group mean) / (group std +
    eps), std being the population std (unbiased=False; TRL and verl use the unbiased one).
    ``scale_by_std=False`` gives r - group mean (Dr. GRPO, Liu et al. 2025).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B]; got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"batch size {rewards.shape[0]} is not divisible by group_size {group_size}")
    grouped = rewards.reshape(-1, group_size)  # [B/G, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [B/G, G]
    if scale_by_std:
        centred = centred / (grouped.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.reshape(-1)  # [B]


def tis_weights(old_logps: Tensor, rollout_logps: Tensor, mask: Tensor, cap: float,
                sequence: bool = False) -> Tensor:
    """Truncated importance sampling weights (Yao et al. 2025, "Your efficient RL framework
    secretly brings you off-policy RL training"): the rollout engine sampled from pi_rollout,
    not from the trainer's pi_old, so the policy gradient is reweighted by their ratio, capped.

    token level:    w_t = min(exp(old_t - rollout_t), cap)                         -> [B, T]
    sequence level: w_i = min(exp(mean_t(old_it - rollout_it)), cap), masked mean  -> [B]
    (the geometric mean, as GSPO's sequence ratio). Constants (no grad); 0 at masked-out
    positions; ``cap <= 0`` raises (the caller leaves the weights out to turn TIS off).
    """
    if cap <= 0:
        raise ValueError(f"tis cap must be > 0 (leave the weights out to disable); got {cap}")
    _check_tokens(old_logps, mask, None, rollout_logps=rollout_logps)
    keep = mask.bool()  # [B, T]
    diff = _masked_diff(old_logps.detach(), rollout_logps.detach(), keep)  # [B, T]
    if sequence:
        return torch.exp(masked_mean(diff, keep, dim=1)).clamp(max=cap)  # [B]
    return torch.where(keep, torch.exp(diff).clamp(max=cap), torch.zeros_like(diff))  # [B, T]


def grpo_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor,
              eps_low: float = 0.2, eps_high: float = 0.2, ref_logps: Tensor | None = None,
              kl_coef: float = 0.0, token_level: bool = False,
              is_weights: Tensor | None = None) -> tuple[Tensor, Metrics]:
    """Token-level clipped surrogate (PPO, Schulman et al. 2017) with group advantages (GRPO).

    loss_t = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A) + kl_coef * k3_t,
    rho_t = exp(logp_t - old_logp_t). Aggregation: per sequence over its masked tokens, then over
    the batch (GRPO; TRL loss_type="grpo"), or with ``token_level=True`` over all masked tokens of
    the batch (DAPO, Yu et al. 2025, eq. 8; TRL "bnpo"/"dapo"). Sequences with no masked tokens add
    0 and still count in the batch mean. Asymmetric eps is DAPO's clip-higher.
    ``is_weights`` [B, T] (``tis_weights``, rollouts from a separate engine): each token's
    clipped surrogate is multiplied by its weight (the KL term is not), with ``old_logps`` the
    trainer's own recomputed logps, so the PPO ratio is taken against the train-side policy.
    """
    _check_tokens(logps, mask, advantages, old_logps=old_logps, ref_logps=ref_logps,
                  is_weights=is_weights)
    if kl_coef > 0 and ref_logps is None:
        raise ValueError(f"kl_coef={kl_coef} > 0 needs ref_logps (got None)")
    keep = mask.bool()  # [B, T]
    ratio = torch.exp(_masked_diff(logps, old_logps.detach(), keep))  # [B, T]
    adv = advantages.detach().unsqueeze(1)  # [B, 1]
    surr = ratio * adv  # [B, T]
    surr_clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv  # [B, T]
    per_token = -torch.min(surr, surr_clipped)  # [B, T]
    if is_weights is not None:  # TIS: reweight the policy-gradient term only (not the KL)
        per_token = per_token * torch.where(keep, is_weights.detach(), torch.zeros_like(logps))
    kl = None
    if ref_logps is not None:
        zero = torch.zeros_like(logps)  # padding: logp = ref = 0, so k3 = 0 there
        kl = k3_kl(torch.where(keep, logps, zero), torch.where(keep, ref_logps.detach(), zero))
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    if token_level:
        loss = masked_mean(per_token, keep)
    else:
        loss = masked_mean(per_token, keep, dim=1).mean()
    with torch.no_grad():
        metrics = {
            # clipping is active (zero gradient) where the clipped term is the smaller one
            "clip_fraction": masked_mean((surr_clipped < surr).to(ratio.dtype), keep).item(),
            "ratio_mean": masked_mean(ratio, keep).item(),
            "loss": loss.item(),
        }
        if kl is not None:
            metrics["kl"] = masked_mean(kl, keep).item()
    return loss, metrics


def gspo_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor,
              eps_low: float = 3e-4, eps_high: float = 4e-4,
              is_weights: Tensor | None = None) -> tuple[Tensor, Metrics]:
    """GSPO (Zheng et al. 2025, eq. 5-7): sequence-level ratio, clipped, mean over sequences.

    s_i = exp(mean_t (logp_it - old_logp_it)) over the masked tokens of sequence i;
    loss = mean_i -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i). Same as TRL's
    importance_sampling_level="sequence", loss_type="grpo". A sequence with no masked token adds 0.
    ``is_weights`` [B] (``tis_weights(..., sequence=True)``) multiplies each sequence's term.
    """
    _check_tokens(logps, mask, advantages, old_logps=old_logps)
    if is_weights is not None and is_weights.shape != logps.shape[:1]:
        raise ValueError(f"is_weights must be [B] = [{logps.shape[0]}] for gspo; "
                         f"got {tuple(is_weights.shape)}")
    keep = mask.bool()  # [B, T]
    seq_log_ratio = masked_mean(_masked_diff(logps, old_logps.detach(), keep), keep, dim=1)  # [B]
    ratio = torch.exp(seq_log_ratio)  # [B]
    adv = advantages.detach()  # [B]
    surr = ratio * adv  # [B]
    surr_clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv  # [B]
    nonempty = keep.any(dim=1).to(ratio.dtype)  # [B]
    per_seq = -torch.min(surr, surr_clipped) * nonempty  # [B]
    if is_weights is not None:  # TIS at the sequence level
        per_seq = per_seq * is_weights.detach()
    loss = per_seq.mean()
    with torch.no_grad():
        metrics = {
            "clip_fraction": (surr_clipped < surr).to(ratio.dtype).mean().item(),  # over sequences
            "ratio_mean": ratio.mean().item(),
            "loss": loss.item(),
        }
    return loss, metrics


def _implicit_rewards(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
                      beta: float) -> tuple[Tensor, Tensor]:
    """h(y) = beta * (log pi(y|x) - log pi_ref(y|x)) for chosen and rejected, each [B]."""
    shapes = [tuple(t.shape) for t in (chosen, rejected, ref_chosen, ref_rejected)]
    if len(set(shapes)) != 1 or chosen.dim() != 1:
        raise ValueError(f"preference inputs must all be [B] sequence log-prob sums; got {shapes}")
    return beta * (chosen - ref_chosen.detach()), beta * (rejected - ref_rejected.detach())


def _reward_metrics(h_c: Tensor, h_r: Tensor, loss: Tensor) -> Metrics:
    with torch.no_grad():
        return {
            "reward_chosen": h_c.mean().item(),
            "reward_rejected": h_r.mean().item(),
            "reward_margin": (h_c - h_r).mean().item(),
            "accuracy": (h_c > h_r).float().mean().item(),
            "loss": loss.item(),
        }


def dpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float = 0.1) -> tuple[Tensor, Metrics]:
    """Sigmoid DPO (Rafailov et al. 2023, eq. 7): mean -logsigmoid(h(y_c) - h(y_r)).

    Inputs are sequence log-prob sums [B]; TRL DPOTrainer loss_type="sigmoid".
    """
    h_c, h_r = _implicit_rewards(  # [B], [B]
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    loss = -F.logsigmoid(h_c - h_r).mean()
    return loss, _reward_metrics(h_c, h_r, loss)


def bco_pair_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor,
                  ref_rejected_logps: Tensor, beta: float = 0.1,
                  delta: float = 0.0) -> tuple[Tensor, Metrics]:
    """BCO quality loss on pairs (Jung et al. 2024; MPO, Wang et al. 2024, InternVL):

    mean -logsigmoid(h(y_c) - delta) - logsigmoid(-(h(y_r) - delta)), h as in DPO.
    The papers and TRL's "bco_pair" before 1.0 use delta = a running mean of past rewards (kept in
    the trainer); TRL 1.16's "bco_pair" drops delta (= 0). Here delta is an argument (default 0):
    the caller keeps any running mean, so this function stays pure.
    """
    h_c, h_r = _implicit_rewards(  # [B], [B]
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    loss = (-F.logsigmoid(h_c - delta) - F.logsigmoid(-(h_r - delta))).mean()
    return loss, _reward_metrics(h_c, h_r, loss)


def mpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, chosen_lengths: Tensor, beta: float = 0.1,
             weights: tuple[float, float, float] = (0.8, 0.2, 1.0),
             delta: float = 0.0) -> tuple[Tensor, Metrics]:
    """Mixed Preference Optimization (Wang et al. 2024, InternVL2-MPO; InternVL3.5 stage 1).

    w_p * DPO + w_q * BCO + w_g * mean_i(-chosen_logps_i / chosen_lengths_i), the last term being
    the per-token NLL of each chosen response averaged over the batch (TRL's "sft" loss_type
    averages over all chosen tokens of the batch instead; equal only for equal lengths).
    chosen_lengths [B]: number of response tokens in each chosen sequence (clamped to >= 1).
    """
    if len(weights) != 3:
        raise ValueError(f"weights must be (preference, quality, generation); got {weights!r}")
    if chosen_lengths.shape != chosen_logps.shape:
        raise ValueError(f"chosen_lengths must be [B] like chosen_logps "
                         f"{tuple(chosen_logps.shape)}; got {tuple(chosen_lengths.shape)}")
    args = (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    pref, pref_m = dpo_loss(*args, beta=beta)
    qual, qual_m = bco_pair_loss(*args, beta=beta, delta=delta)
    lengths = chosen_lengths.to(chosen_logps.dtype).clamp(min=1.0)  # [B]
    gen = (-chosen_logps / lengths).mean()  # per-token NLL of each chosen response, batch mean
    loss = weights[0] * pref + weights[1] * qual + weights[2] * gen
    metrics = {
        "dpo_loss": pref_m["loss"], "bco_loss": qual_m["loss"], "sft_loss": gen.item(),
        "reward_margin": pref_m["reward_margin"], "accuracy": pref_m["accuracy"],
        "reward_chosen": pref_m["reward_chosen"], "reward_rejected": pref_m["reward_rejected"],
        "loss": loss.item(),
    }
    return loss, metrics


def sft_loss(logps: Tensor, mask: Tensor) -> tuple[Tensor, Metrics]:
    """Negative log-likelihood averaged over all masked tokens of the batch (token-level, as HF
    causal-LM loss with ignore_index). logps, mask [B, T]; an all-zero mask gives 0 with a graph."""
    _check_tokens(logps, mask, None)
    loss = masked_mean(-logps, mask)
    return loss, {"loss": loss.item(), "num_tokens": float(mask.bool().sum().item())}

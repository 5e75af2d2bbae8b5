"""What online RL does with a rollout server (rollout.engine: openai; docs/rollout_server.md).

    actor = actor_for(run, cfg)          # None for the in-process engine; syncs weights first
    fixes = off_policy(run, cfg, batch, contexts, parts)   # before the first update of a step

Weight sync: before a rollout, when the optimiser stepped since the last sync, rank 0 saves the
weights (LoRA: the peft adapter, `save_pretrained`; full: merged safetensors) under a new name
and asks the server to load them, then unloads the previous adapter; every rank then sends its
requests to the new name. Versioned names make a request never see half-loaded weights.

Off-policy correction: the server's sampler is not the trainer's forward (other kernels, other
batching, bf16, an adapter that lags), so the trainer recomputes the episode's logps with its
own forward (no grad, before any update of the step) and uses THOSE as the PPO anchor. The
gap |train - rollout| over response tokens is logged per step, and the policy gradient is
reweighted by min(exp(train - rollout), tis_cap) (truncated importance sampling, Yao et al.
2025; losses.tis_weights).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmagent.engines.openai_server import ServerActor
from vlmagent.losses import tis_weights
from vlmagent.modelio import is_peft
from vlmagent.train.common import pad_masked

ENGINES = ("local", "openai")
SYNCS = ("lora", "full", "none")
_STATE = "_rollout_engine"  # attribute on the StageRun: one server actor per running stage


@dataclass
class EngineState:
    actor: ServerActor
    synced: int = -1  # run.updates at the last weight sync; -1: never synced
    folder: Path | None = None  # the weights the server has loaded
    sync_s: float = 0.0  # seconds the last sync took (save + load)
    syncs: int = 0


@dataclass
class OffPolicy:
    """One micro-batch's train-side old logps [B, T] and TIS weights ([B, T] grpo, [B] gspo)."""

    old: torch.Tensor
    weights: torch.Tensor | None
    stats: dict[str, Any] = field(default_factory=dict)


def actor_for(run: Any, cfg: Any) -> ServerActor | None:
    """The stage's server actor (made on first use), its weights synced to the policy's; None
    with rollout.engine local (agent.rollout then samples from the policy in-process)."""
    rc = cfg.rollout
    if rc.engine not in ENGINES:
        raise ValueError(f"rollout.engine {rc.engine!r} (valid: {', '.join(ENGINES)})")
    if rc.engine == "local":
        return None
    state = getattr(run, _STATE, None)
    if state is None:
        state = EngineState(ServerActor(run.policy, rc))
        setattr(run, _STATE, state)  # lives and dies with the run (StageRun: train/common.py)
    if state.synced != run.updates:
        sync_weights(run, rc, state)
    return state.actor


def sync_weights(run: Any, rc: Any, state: EngineState) -> None:
    """Save the policy's weights under a new version and have the server load them."""
    if rc.weight_sync not in SYNCS:
        raise ValueError(f"rollout.weight_sync {rc.weight_sync!r} (valid: {', '.join(SYNCS)})")
    t = time.perf_counter()
    if rc.weight_sync != "none":
        name = f"{run.stage.name}-u{run.updates}"
        root = Path(rc.sync_dir) if rc.sync_dir else Path(run.out) / "rollout_weights"
        folder = (root / name).resolve()
        client = state.actor.client
        if run.acc.is_main_process:
            if rc.weight_sync == "lora":
                if not is_peft(run.policy.model):
                    raise ValueError("rollout.weight_sync lora needs a LoRA policy (policy.lora); "
                                     "use weight_sync full (SGLang) or none")
                run.policy.model.save_pretrained(str(folder), safe_serialization=True)
                client.load_lora(name, str(folder))
                if state.actor.adapter:  # the previous version: no request uses it any more
                    client.unload_lora(state.actor.adapter)
            else:
                run.policy.save_pretrained(folder, merged=True)
                client.load_full(str(folder))
            if state.folder is not None and state.folder != folder:
                shutil.rmtree(state.folder, ignore_errors=True)
        run.acc.wait_for_everyone()  # no rank samples before the server holds the new weights
        state.folder = folder
        state.actor.adapter = name if rc.weight_sync == "lora" else None
    state.synced = run.updates
    state.syncs += 1
    state.sync_s = time.perf_counter() - t


def _rollout_logps(batch: list[Any], like: torch.Tensor) -> torch.Tensor:
    """The engine's sampled logps laid out as `like` [B, T] (token t at column t-1)."""
    out = torch.zeros_like(like)
    for b, t in enumerate(batch):
        pos = [p - 1 for p, m in enumerate(t.loss_mask) if m]
        out[b, pos] = torch.tensor(t.logps, dtype=out.dtype, device=out.device)
    return out


@torch.no_grad()
def off_policy(run: Any, cfg: Any, batch: list[Any], contexts: list[Any],
               parts: list[list[int]]) -> list[OffPolicy | None]:
    """Per micro-batch (`parts`: indices into batch): the trainer's own logps of the sampled
    tokens (eval mode, no grad) and the TIS weights against the engine's logps. All None with
    the in-process engine, whose sampled logps are the trainer's (tests/test_agent.py)."""
    if cfg.rollout.engine == "local" or not batch:
        return [None] * len(parts)
    st, model = run.stage, run.policy.model
    was = model.training
    model.eval()  # the policy's distribution, whatever mode training runs its forward in
    out: list[OffPolicy | None] = []
    try:
        for idx in parts:
            sub = [batch[i] for i in idx]
            old, mask = pad_masked(run.policy.logprobs([contexts[i] for i in idx],
                                                       st.temperature),
                                   [t.loss_mask for t in sub])
            old = old.detach().float().cpu()
            rollout = _rollout_logps(sub, old)
            keep = mask.bool()
            gap = (old - rollout).abs()[keep]
            w = None
            if st.tis_cap:
                w = tis_weights(old, rollout, mask, st.tis_cap, sequence=st.kind == "gspo")
            raw = torch.exp((old - rollout)[keep])
            out.append(OffPolicy(old, w, {"gap_sum": gap.sum().item(), "n": gap.numel(),
                                          "gap_max": gap.max().item() if gap.numel() else 0.0,
                                          "capped": (raw > st.tis_cap).sum().item()
                                          if st.tis_cap else 0}))
    finally:
        model.train(was)
    return out


def gap_metrics(run: Any, fixes: list[OffPolicy | None]) -> dict[str, float]:
    """rollout/logp_gap (mean |train - rollout| logp over response tokens), its max, the share
    of tokens whose TIS weight hit the cap, and the last weight sync's seconds."""
    got = [f.stats for f in fixes if f is not None]
    if not got:
        return {}
    n = max(1, sum(s["n"] for s in got))
    out = {"rollout/logp_gap": sum(s["gap_sum"] for s in got) / n,
           "rollout/logp_gap_max": max(s["gap_max"] for s in got),
           "rollout/tis_capped": sum(s["capped"] for s in got) / n}
    state = getattr(run, _STATE, None)
    if state is not None:
        out["rollout/sync_s"] = state.sync_s
    return out

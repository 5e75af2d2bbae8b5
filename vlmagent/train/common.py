"""Plumbing every training stage shares: ranks, optimiser and schedule, gradient sync,
checkpoints that resume exactly, metrics to JSONL and to accelerate's trackers.

Ranks (accelerate launch, gloo on CPU) hold identical weights: every rank starts from the same
checkpoint, computes gradients on its own shard of the batch, and gradients are averaged with
an explicit all-reduce before each optimiser step. (The policy's forward goes through its own
`logprobs`, not a DDP wrapper, so the sync is ours and visible.)
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from vlmagent.config import StageConfig

CKPT_DONE = "complete"  # written last: a checkpoint without it was interrupted and is ignored


def make_accelerator(out_dir: Path) -> Accelerator:
    """CPU-capable accelerator; tensorboard logging when it is installed."""
    try:
        import tensorboard  # noqa: F401
        log_with = ["tensorboard"]
    except ImportError:
        log_with = []
    return Accelerator(cpu=not torch.cuda.is_available(), log_with=log_with or None,
                       project_dir=str(out_dir))


def shard(items: list[Any], acc: Accelerator) -> list[Any]:
    """This rank's share of a batch (contiguous blocks keep GRPO groups whole per rank)."""
    n, k, r = len(items), acc.num_processes, acc.process_index
    per = math.ceil(n / k)
    return items[r * per:(r + 1) * per]


def step_seed(seed: int, stage: str, step: int) -> int:
    """Deterministic per-step seed, so a resumed stage sees the same data and samples."""
    return (seed * 1_000_003 + sum(map(ord, stage)) * 10_007 + step) % (2 ** 31)


def make_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """transformers' schedule named by `stage.schedule` (constant, cosine, linear, ...), over
    steps x epochs_per_batch updates. transformers' warm-up starts at lr 0 (update 0 of W has
    factor 0/W), so a warm-up of W steps reaches the full lr at update W."""
    from transformers import get_scheduler
    from transformers.trainer_utils import SchedulerType

    name = stage.schedule or "constant"
    valid = [t.value for t in SchedulerType]
    if name not in valid:
        raise ValueError(f"stage {stage.name}: unknown schedule {name!r} "
                         f"(valid: {', '.join(valid)})")
    warm = stage.warmup_steps or 0
    if name == "constant" and warm:
        name = "constant_with_warmup"
    total = max(1, stage.steps * (stage.epochs_per_batch or 1))
    return get_scheduler(name, optimizer, num_warmup_steps=warm, num_training_steps=total)


@dataclass
class StageRun:
    """A running stage: policy, optimiser, schedule, counters and logs."""

    stage: StageConfig
    policy: Any
    acc: Accelerator
    out: Path
    seed: int
    step: int = 0
    updates: int = 0
    t0: float = field(default_factory=time.perf_counter)
    optimizer: torch.optim.Optimizer = None  # type: ignore[assignment]
    scheduler: torch.optim.lr_scheduler.LRScheduler = None  # type: ignore[assignment]
    reference: Any = None  # frozen reference policy, made by stages that need one
    web: Any = None  # the stage's website reward pool (webgen online stages), closed by close()

    frozen: list[torch.nn.Parameter] = field(default_factory=list)  # by `freeze`, until close()

    def __post_init__(self) -> None:
        # `freeze`: parameters this stage leaves as they are (e.g. the output head in online RL,
        # whose rows for tokens the policy rarely samples get noise-only gradients that Adam
        # turns into full-size steps: docs/training.md); given back at close()
        for name, p in self.policy.model.named_parameters():
            if p.requires_grad and any(k in name for k in self.stage.freeze or ()):
                p.requires_grad_(False)
                self.frozen.append(p)
        params = self.trainable()
        if not params:
            raise ValueError(f"stage {self.stage.name}: the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=self.stage.lr, weight_decay=0.0)
        self.scheduler = make_scheduler(self.optimizer, self.stage)

    def close(self) -> None:
        """Free what the stage started (reward worker processes); unfreeze what it froze."""
        if self.web is not None:
            self.web.close()
            self.web = None
        for p in self.frozen:
            p.requires_grad_(True)
        self.frozen.clear()

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.model.parameters() if p.requires_grad]

    def global_share(self, local: float) -> float:
        """local / (sum of `local` over ranks): weights a rank's loss so that summed gradients
        equal those of the whole batch on one process (e.g. token-level means)."""
        if self.acc.num_processes == 1:
            return 1.0
        total = float(self.acc.reduce(torch.tensor([float(local)]), reduction="sum"))
        return local / total if total else 0.0

    def update(self, loss: torch.Tensor, max_norm: float = 1.0, reduction: str = "mean"
               ) -> float:
        """One optimiser step on `loss`; gradients combined over ranks by `reduction`
        ("mean" for per-rank means of equal shards, "sum" after `global_share` weighting)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = self.trainable()
        if self.acc.num_processes > 1:
            for p in params:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                p.grad = self.acc.reduce(g.contiguous(), reduction=reduction)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.updates += 1
        return float(norm)

    # ------------------------------------------------------------ logging
    def log(self, metrics: dict[str, float]) -> None:
        metrics = {"step": self.step, "lr": self.scheduler.get_last_lr()[0],
                   "elapsed_s": round(time.perf_counter() - self.t0, 3), **metrics}
        if self.acc.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        self.acc.log({f"{self.stage.name}/{k}": v for k, v in metrics.items()
                      if isinstance(v, (int, float))}, step=self.step)

    # ------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        """checkpoints/step-N/: trainable weights (safetensors), optimiser, schedule, RNG."""
        ck = self.out / "checkpoints" / f"step-{self.step:06d}"
        ck.mkdir(parents=True, exist_ok=True)
        if self.acc.is_main_process:
            save_file(trainable_state(self.policy), str(ck / "trainable.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "step": self.step,
                        "updates": self.updates, "stage": asdict(self.stage)},
                       ck / "trainer_state.pt")
        torch.save(_rng_state(), ck / f"rng_rank{self.acc.process_index}.pt")
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            (ck / CKPT_DONE).write_text(str(self.step))
        self.acc.wait_for_everyone()
        return ck

    def resume(self) -> bool:
        """Load the newest complete checkpoint of this stage, if any."""
        ck = latest_checkpoint(self.out)
        if ck is None:
            return False
        state = load_file(str(ck / "trainable.safetensors"))
        missing = self.policy.model.load_state_dict(state, strict=False)
        bad = [k for k in state if k in set(missing.unexpected_keys)]
        if bad:
            raise RuntimeError(f"checkpoint {ck} does not fit the policy: {bad[:3]} ...")
        trainer = torch.load(ck / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.step, self.updates = trainer["step"], trainer["updates"]
        rng = ck / f"rng_rank{self.acc.process_index}.pt"
        if rng.exists():
            _set_rng_state(torch.load(rng, weights_only=False))
        return True


def trainable_state(policy: Any) -> dict[str, torch.Tensor]:
    """The trainable parameters by name: what a checkpoint must hold to resume a stage."""
    return {n: p.detach().contiguous() for n, p in policy.model.named_parameters()
            if p.requires_grad}


def latest_checkpoint(stage_dir: Path) -> Path | None:
    done = sorted(p.parent for p in (stage_dir / "checkpoints").glob(f"step-*/{CKPT_DONE}"))
    return done[-1] if done else None


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def _set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def pad_masked(logps: list[torch.Tensor], masks: list[list[int]]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence logps [T_i - 1] and loss masks [T_i] -> right-padded [B, T], [B, T].

    Token t's logp is predicted from tokens < t, so its mask is loss_mask[t] for t >= 1.
    """
    width = max(lp.shape[0] for lp in logps)
    out = torch.zeros(len(logps), width, dtype=logps[0].dtype)
    mask = torch.zeros(len(logps), width)
    for b, (lp, m) in enumerate(zip(logps, masks)):
        out[b, :lp.shape[0]] = lp
        mask[b, :lp.shape[0]] = torch.tensor(m[1:], dtype=mask.dtype)
    return out, mask

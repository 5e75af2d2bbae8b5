"""Plumbing every training stage shares: ranks, optimiser and schedule, gradient sync,
checkpoints that resume exactly, metrics to JSONL and to accelerate's trackers.

Ranks (accelerate launch, gloo on CPU) hold identical weights: every rank starts from the same
checkpoint and computes gradients on its own shard of the batch. Under a distributed accelerate
config the stages whose every gradient flows through `Policy.logprobs` (WRAPPED_KINDS) have the
policy's forward prepared by accelerate (DDP / FSDP, from configs/accelerate/*.yaml), which
syncs gradients in backward; the other stages (small heads) average gradients with an explicit
all-reduce before each optimiser step.

A step may accumulate micro-batches (`backward` per micro-batch, one `optimizer_step`), their
losses weighted so the summed gradient is that of the whole batch (docs/training.md, "Scale").
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedType
from safetensors.torch import load_file, save_file

from vlmagent.config import StageConfig

# make_accelerator and full_weights are re-exported: stages and tests import plumbing from here
from vlmagent.train.distributed import (  # noqa: F401
    _distributed,
    full_weights,
    gather_weights,
    is_fsdp,
    make_accelerator,
    shard_weights,
)

CKPT_DONE = "complete"  # written last: a checkpoint without it was interrupted and is ignored
# Kinds whose gradients all come through Policy.logprobs/log_dists (the wrapped forward); the
# warm-up and router heads train on features computed outside it, so they keep the manual sync.
WRAPPED_KINDS = ("sft", "mpo", "dpo", "grpo", "gspo", "vico")


def shard(items: list[Any], acc: Accelerator) -> list[Any]:
    """This rank's share of a batch (contiguous blocks keep GRPO groups whole per rank)."""
    n, k, r = len(items), acc.num_processes, acc.process_index
    per = math.ceil(n / k)
    return items[r * per:(r + 1) * per]


def micro_batches(lengths: list[int], budget: int | None) -> list[list[int]]:
    """Indices of a batch in micro-batches whose padded size (count x longest sequence) stays
    within `budget` tokens; longest first, so similar lengths share padding. A sequence longer
    than the budget goes alone. budget 0/None: everything in one micro-batch, in order."""
    if not budget or not lengths:
        return [list(range(len(lengths)))] if lengths else []
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep order
    out: list[list[int]] = []
    for i in order:
        if out and (len(out[-1]) + 1) * lengths[out[-1][0]] <= budget:
            out[-1].append(i)  # the first of a micro-batch is its longest
        else:
            out.append([i])
    return out


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
    last_sampled: list[Any] = field(default_factory=list)  # this step's rollouts (preference)

    frozen: list[torch.nn.Parameter] = field(default_factory=list)  # by `freeze`, until close()
    wrapped: Any = None  # the accelerate-prepared TrainForward (DDP / FSDP), until close()

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
        if self.stage.kind in WRAPPED_KINDS and _distributed(self.acc):
            self._prepare()
        self.scheduler = make_scheduler(self.optimizer, self.stage)

    def _prepare(self) -> None:
        """accelerate wraps the policy's forward (DDP, FSDP, DeepSpeed as its config says) and
        the optimiser; the policy routes its forward with grad through the wrapper. We step
        the inner optimiser ourselves (the schedule and checkpoints hold that one)."""
        from vlmagent.train.distributed import TrainForward

        if self.acc.distributed_type == DistributedType.DEEPSPEED:
            # a DeepSpeed engine steps the optimiser inside its backward (once per backward,
            # with its own clipping and schedule): our micro-batch accumulation, clip, step and
            # schedule, and the checkpoints that hold them, do not map onto it (yet)
            raise NotImplementedError(
                "DeepSpeed launches (configs/accelerate/deepspeed_zero2.yaml, "
                "deepspeed_zero3.yaml) are not supported: a DeepSpeed engine steps the "
                "optimiser inside its backward, which StageRun's micro-batch accumulation and "
                "its own clip/step/schedule/checkpoints do not fit. Use configs/accelerate/"
                "ddp.yaml (replicated weights) or fsdp.yaml (FSDP2, sharded weights, gradients "
                "and optimiser state; ZeRO-3's role) instead (docs/training.md, 'Scale')")
        if is_fsdp(self.acc):
            plugin = self.acc.state.fsdp_plugin
            if plugin.fsdp_version != 2:
                raise ValueError("FSDP needs fsdp_version: 2 (FSDP1 keeps no whole weights "
                                 "outside its forward for generation); see "
                                 "configs/accelerate/fsdp.yaml")
            if getattr(self.policy, "fsdp_root", None) is not None:
                self._reuse_fsdp()
                return
            self._fsdp_reference()
        wrapped, opt = self.acc.prepare(TrainForward(self.policy), self.optimizer)
        self.optimizer = getattr(opt, "optimizer", opt)
        self.wrapped = self.policy.wrapped = wrapped
        if is_fsdp(self.acc):
            self.policy.fsdp_root, self.policy.fsdp_gathered = wrapped, None
            self.policy.fsdp_freeze = tuple(self.stage.freeze or ())
        self.acc.print(f"[{self.stage.name}] accelerate prepared the policy's forward: "
                       f"{type(wrapped).__name__} over {self.acc.num_processes} process(es)")

    def _fsdp_reference(self) -> None:
        """A full-weights frozen reference (online.Reference) is a copy of the policy: under
        FSDP it is made here, before sharding, from the whole weights (LoRA needs none)."""
        from vlmagent.train.online import Reference

        st = self.stage
        if (st.kind in ("mpo", "dpo") or st.kl_coef) and self.reference is None \
                and not hasattr(self.policy.model, "disable_adapter"):
            self.reference = Reference(self.policy, bool(st.reference_offload))

    def _reuse_fsdp(self) -> None:
        """A later stage under FSDP: the policy stays sharded by the first one (fully_shard is
        applied once); this stage shards back what the last one left gathered and steps its
        own AdamW on the shards. The trainable set is fixed when sharding, so `freeze` must
        match the first FSDP stage's."""
        if tuple(self.stage.freeze or ()) != self.policy.fsdp_freeze:
            raise ValueError(f"stage {self.stage.name}: under FSDP every stage must freeze the "
                             f"same parameters (first: {list(self.policy.fsdp_freeze)})")
        if self.stage.kind in ("mpo", "dpo") or self.stage.kl_coef:
            if not hasattr(self.policy.model, "disable_adapter"):
                raise NotImplementedError("under FSDP a full-weights reference can only be made "
                                          "by the first FSDP stage (before sharding)")
        shard_weights(self.policy)
        self.optimizer = torch.optim.AdamW(self.trainable(), lr=self.stage.lr, weight_decay=0.0)
        self.wrapped = self.policy.wrapped = self.policy.fsdp_root

    def close(self) -> None:
        """Free what the stage started (reward worker processes); unfreeze what it froze.
        Under FSDP the weights are left gathered (collective): evaluation and saving use them."""
        if self.web is not None:
            self.web.close()
            self.web = None
        if getattr(self.policy, "fsdp_root", None) is not None:
            gather_weights(self.policy)
            self.policy.wrapped = self.wrapped = None
            self.acc._optimizers.clear()
            return  # frozen ones stay frozen: the sharded trainable set is fixed (_reuse_fsdp)
        for p in self.frozen:
            p.requires_grad_(True)
        self.frozen.clear()
        if self.wrapped is not None:  # the next stage wraps afresh (its own trainable set)
            self.policy.wrapped = None
            self.acc._models = [m for m in self.acc._models if m is not self.wrapped]
            self.acc._optimizers.clear()
            self.wrapped = None

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.model.parameters() if p.requires_grad]

    def global_share(self, local: float) -> float:
        """local / (sum of `local` over ranks): weights a rank's loss so that summed gradients
        equal those of the whole batch on one process (e.g. token-level means)."""
        if self.acc.num_processes == 1:
            return 1.0
        total = float(self.acc.reduce(torch.tensor([float(local)], device=self.acc.device),
                                      reduction="sum"))
        return local / total if total else 0.0

    def update(self, loss: torch.Tensor, max_norm: float = 1.0, reduction: str = "mean"
               ) -> float:
        """One optimiser step on `loss`; gradients combined over ranks by `reduction`
        ("mean" for per-rank means of equal shards, "sum" after `global_share` weighting)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, reduction)
        return self.optimizer_step(max_norm, reduction)

    def backward(self, loss: torch.Tensor, reduction: str = "mean", last: bool = True) -> None:
        """Accumulate one micro-batch's gradient. A wrapper (DDP/FSDP) averages over ranks in
        the backward of the `last` micro-batch (the others run under no_sync, so ranks may run
        different numbers of them); "sum" undoes its division by the number of ranks."""
        if self.wrapped is None:
            loss.backward()
            return
        if reduction == "sum":
            loss = loss * self.acc.num_processes
        ctx = self.acc.no_sync(self.wrapped) if not last else contextlib.nullcontext()
        with ctx:
            loss.backward()

    def micro_count(self, n: int) -> int:
        """How many micro-batches every rank runs this step: the most any rank has (`n` here).
        Under a wrapper every forward takes part in collectives (FSDP all-gathers each unit;
        DDP syncs in the last backward), so the ranks must run the same number; a rank with
        fewer pads with zero-weight ones (pad_backward). One all-reduce; `n` without one."""
        if self.wrapped is None or self.acc.num_processes == 1:
            return n
        t = torch.tensor([n], device=self.acc.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def pad_backward(self, contexts: list[Any], done: int, count: int) -> None:
        """Micro-batches done..count-1 of `count` (micro_count) as zero-weight ones."""
        for k in range(done, count):
            self.zero_backward(contexts, last=k == count - 1)

    def zero_backward(self, contexts: list[Any], last: bool = True) -> None:
        """A zero gradient that still joins the ranks' collectives. Under a wrapper it goes
        through the wrapped forward (whose backward is the sync, whose units FSDP gathers), on
        one context of the step (any episode the rank has; images included, so the same units
        run as on the other ranks)."""
        if self.wrapped is not None:
            if not contexts:
                raise RuntimeError("a rank with nothing to learn needs one context of the step "
                                   "for its zero-weight forward (else the other ranks wait)")
            loss = sum(lp.sum() for lp in self.policy.logprobs(contexts[:1])) * 0.0
        else:
            loss = sum(p.sum() * 0.0 for p in self.trainable())
        self.backward(loss, "sum", last=last)

    def optimizer_step(self, max_norm: float = 1.0, reduction: str = "mean") -> float:
        """Sync (unless the wrapper did), clip, one optimiser and schedule step; grads cleared."""
        params = self.trainable()
        if self.acc.num_processes > 1 and self.wrapped is None:
            for p in params:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                p.grad = self.acc.reduce(g.contiguous(), reduction=reduction)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
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
        if getattr(self.policy, "fsdp_root", None) is not None:
            raise NotImplementedError(
                "mid-stage checkpoints under FSDP (sharded AdamW state) are not written yet: "
                "set checkpoint_every: 0 for FSDP stages (the end-of-stage weights are saved)")
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
    dev = logps[0].device  # the accelerator's: the loss is computed where the logps are
    out = torch.zeros(len(logps), width, dtype=logps[0].dtype, device=dev)
    mask = torch.zeros(len(logps), width, device=dev)
    for b, (lp, m) in enumerate(zip(logps, masks)):
        out[b, :lp.shape[0]] = lp
        mask[b, :lp.shape[0]] = torch.tensor(m[1:], dtype=mask.dtype)
    return out, mask

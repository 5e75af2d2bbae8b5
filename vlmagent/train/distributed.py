"""Where the weights live across ranks: the accelerator, and FSDP's shards gathered whole for
generation, evaluation and saving (docs/training.md, "Scale").

accelerate enables FSDP only when it finds an accelerator; on CPU ranks (gloo) `_cpu_fsdp` sets
the state a GPU launch would get, so the same FSDP2 preparation (torch `fully_shard`) runs in
the CPU tests. Generation never runs FSDP collectives: `full_weights` gathers each unit's
whole weights once and keeps them until training resumes.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedType


def make_accelerator(out_dir: Path) -> Accelerator:
    """CPU-capable accelerator; tensorboard logging when it is installed."""
    try:
        import tensorboard  # noqa: F401
        log_with = ["tensorboard"]
    except ImportError:
        log_with = []
    acc = Accelerator(cpu=not torch.cuda.is_available(), log_with=log_with or None,
                      project_dir=str(out_dir))
    _cpu_fsdp(acc)
    return acc


def _cpu_fsdp(acc: Accelerator) -> None:
    """An FSDP launch (configs/accelerate/fsdp.yaml) on CPU ranks under gloo. accelerate 1.15
    only turns FSDP on for accelerators: without a GPU the launch becomes plain MULTI_CPU (DDP)
    and the plugin it built from the launcher's FSDP_* variables is dropped. torch's FSDP2
    (`fully_shard`) runs on CPU meshes under gloo, so the state is set to what a GPU launch
    gets (distributed type FSDP, the same plugin) and accelerate's own FSDP2 preparation runs.
    FSDP1 has no CPU path here: refused rather than silently run as DDP."""
    if (acc.distributed_type != DistributedType.MULTI_CPU
            or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true"):
        return
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # read from the launcher's FSDP_* variables
    if plugin.fsdp_version != 2:
        raise ValueError("FSDP on CPU needs fsdp_version: 2 (torch fully_shard) in the "
                         "accelerate config, as configs/accelerate/fsdp.yaml has")
    if acc.mixed_precision != "no":
        plugin.set_mixed_precision(acc.mixed_precision)
    PartialState().distributed_type = DistributedType.FSDP  # AcceleratorState() re-reads it
    acc.state.distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin


def is_fsdp(acc: Accelerator) -> bool:
    return acc.distributed_type == DistributedType.FSDP


def _fsdp_groups(root: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [g for m in root.modules() if isinstance(m, FSDPModule)
            for g in m._get_fsdp_state()._fsdp_param_groups]


def gather_weights(policy: Any) -> None:
    """FSDP: all-gather every unit's weights and keep them gathered (no reshard after a
    forward), so the unwrapped model (generation, no-grad log-probs, the reference, saving)
    sees whole plain tensors and runs no collective, however many calls each rank makes.
    Collective: every rank calls it at the same point. No-op without FSDP or when gathered."""
    root = getattr(policy, "fsdp_root", None)
    if root is None or policy.fsdp_gathered is not None:
        return
    groups = _fsdp_groups(root)
    policy.fsdp_gathered = [(g, g.post_forward_mesh_info) for g in groups]
    for g in groups:
        g.unshard()
        g.wait_for_unshard()
        g.post_forward_mesh_info = None  # = set_reshard_after_forward(False)


def shard_weights(policy: Any) -> None:
    """Undo gather_weights: back to shards (what training steps on). Collective."""
    saved = getattr(policy, "fsdp_gathered", None)
    if saved is None:
        return
    for g, info in saved:
        g.post_forward_mesh_info = info
        g.reshard()
    policy.fsdp_gathered = None


@contextlib.contextmanager
def full_weights(policy: Any) -> Any:
    """gather_weights for the block (rollouts, the reference, probes), shards after; nested
    blocks and calls without FSDP do nothing."""
    if getattr(policy, "fsdp_root", None) is None or policy.fsdp_gathered is not None:
        yield
        return
    gather_weights(policy)
    try:
        yield
    finally:
        shard_weights(policy)


def _distributed(acc: Accelerator) -> bool:
    """A launch that wants the model prepared: several ranks, or a configured distributed type
    or mixed precision (accelerate's autocast lives in the prepared forward)."""
    return (acc.num_processes > 1 or acc.distributed_type != DistributedType.NO
            or acc.mixed_precision != "no")


class TrainForward(torch.nn.Module):
    """The policy's forward with grad as one module call: what accelerate wraps (DDP, FSDP), so
    every use of the weights (vision tower, language model, LM head) happens inside the
    wrapper's forward, where its hooks sync gradients or gather shards. Policy keeps the
    unwrapped model for generation, saving and checkpoint names."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.model = policy.model  # registered: the wrapper sees these parameters
        self.policy = [policy]  # in a list: not a submodule

    def forward(self, method: str, *args: Any) -> list[torch.Tensor]:
        return getattr(self.policy[0], method)(*args)

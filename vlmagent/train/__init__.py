"""Training stages. Registry: a plain dict, kind -> (step function, data loader).

A step function takes (StageRun, Config, data) and returns that step's metrics; it does its own
forward/backward through `StageRun.update`. PREPARE holds the hooks that must change the model
before the stage's StageRun builds its optimiser (the warm-up attaches its heads there, so they
are trained, synced and checkpointed like everything else).
"""
from __future__ import annotations

from typing import Any

from vlmagent.train import online, preference, sft, vico, warmup


def _no_data(stage: Any) -> None:
    return None


TRAIN_KINDS: dict[str, tuple[Any, Any]] = {
    "sft": (sft.sft_step, sft.load_data),
    "mpo": (preference.preference_step, preference.load_pairs),
    "dpo": (preference.preference_step, preference.load_pairs),
    "grpo": (online.online_step, _no_data),
    "gspo": (online.online_step, _no_data),
    "warmup": (warmup.warmup_step, warmup.load_data),
    "readout": (warmup.readout_step, warmup.load_data),
    "vico": (vico.vico_step, vico.load_data),  # ViCO consistency (router/)
    "router": (vico.router_step, vico.load_data),  # the learned router's head
}

PREPARE: dict[str, Any] = {"warmup": warmup.prepare, "router": vico.prepare}

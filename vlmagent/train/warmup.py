"""Two stages that come before SFT on a tiny model: `warmup` (see) and `readout` (read).

Measured with the tiny Qwen2.5-VL on zoomgrid: trained from random init on expert trajectories
alone, the model learns the format and the box but answers at chance (the loss sits at the
entropy of the image-dependent tokens).

`warmup`, perception: two small linear heads on the vision tower's output tokens (the merged
tokens the language model reads). `where`: the target's cell (the region to zoom into) from the
OVERVIEW's tokens, averaged; `what`: the answer class from the ZOOM's tokens, averaged (stage
`what_pool: max`: their maximum per feature, for an answer a few pixels of one token wide, as
driving's far lamps are). Only the vision tower and the heads train, on the domain's
`perception_batch(n, seed, seen_size, difficulty)` (in memory), easy images first: difficulty
ramps from 0 to 1 over the first quarter of the stage. The heads live on the model as
`warmup_heads` while the stage runs, so the optimiser, the gradient sync across ranks and the
checkpoints include them: `prepare` attaches them before the stage's StageRun is built (needed
to resume), and the stage's last step removes them, so its exported weights and every later
stage are the plain model again.

`readout`: SFT on expert trajectories with the decision tokens counted twice: loss = NLL over
all policy tokens + NLL over the decision tokens, which are the final answer during the first
half of the stage and the answer plus the tool-call arguments (the box) after it. Plain SFT
after `warmup` still stalls: whichever reading forms first wins, usually the box (reading the
overview), and the answer then reads the overview too. Loss only on the decisions breaks the
format; answer and box together learn the box only. Answer first, then both, with the format
anchored by the plain term, learns all three (answer right ~99% of the time the box is).
"""
from __future__ import annotations

import inspect
import json
from typing import Any

import torch
import torch.nn.functional as F

from vlmagent import trajectory
from vlmagent.config import Config, StageConfig
from vlmagent.domains import PerceptionDomain, get_domain
from vlmagent.losses import sft_loss
from vlmagent.protocol import MODE_TAGS
from vlmagent.rewards.episode import answer_tag
from vlmagent.router.learned import pooled_features
from vlmagent.train.common import StageRun, pad_masked, shard, step_seed
from vlmagent.train.data import dataset_args, expert_episodes, seen_fn, train_samples
from vlmagent.types import Trajectory

HEADS = "warmup_heads"
HEAD_SEED = 1234  # heads start the same on every rank and every run
POOLS = ("mean", "max")  # stage.what_pool


def _domain(stage: StageConfig) -> PerceptionDomain:
    mod = get_domain(stage.domain)
    if not isinstance(mod, PerceptionDomain):
        raise ValueError(f"stage {stage.name}: domain {stage.domain!r} has no perception_batch, "
                         "so the warm-up has nothing to train on (zoomgrid has one)")
    return mod


def prepare(stage: StageConfig, policy: Any) -> None:
    """Attach fresh heads to the model (before StageRun builds the optimiser); idempotent."""
    core = policy.core
    if hasattr(core, HEADS):
        return
    if not any(p.requires_grad for p in core.model.visual.parameters()):
        raise ValueError(f"stage {stage.name}: the warm-up trains the vision tower, which is "
                         "frozen here: use full weights or policy.lora.train_vision: true")
    mod = _domain(stage)
    if stage.what_pool not in POOLS:
        raise ValueError(f"stage {stage.name}: what_pool {stage.what_pool!r} "
                         f"(valid: {', '.join(POOLS)})")
    classes = len(next(iter(mod.ANSWERS.values())))
    dim = core.get_input_embeddings().embedding_dim  # merged vision tokens enter the LM as is
    with torch.random.fork_rng(devices=[]):  # leaves the global RNG stream untouched
        torch.manual_seed(HEAD_SEED)
        heads = torch.nn.ModuleDict({"where": torch.nn.Linear(dim, mod.CELLS),
                                     "what": torch.nn.Linear(dim, classes)})
    param = next(core.model.visual.parameters())
    core.add_module(HEADS, heads.to(param.device, param.dtype))


def remove(policy: Any) -> None:
    if hasattr(policy.core, HEADS):
        delattr(policy.core, HEADS)


def decision_mask(policy: Any, traj: Trajectory, calls: bool = True,
                  tag: str = "answer") -> list[int]:
    """1 on the policy tokens that carry the episode's decisions: the content of the final
    <answer></answer> (the domain's answer tag: driving <meta actions>), and (with `calls`)
    every tool-calling turn from its reasoning (zoomgrid's expert names the cell there) to the
    end of the call's arguments (the box)."""
    mask = [0] * len(traj.token_ids)
    open_, close = f"<{tag}>", f"</{tag}>"
    turns = [t for t in traj.turns if t.role == "assistant"]
    for n, turn in enumerate(turns):
        a0, a1 = turn.span
        text, spans = "", []
        for i in range(a0, a1):  # each token's character range in the turn's text
            piece = policy.tokenizer.decode([traj.token_ids[i]], skip_special_tokens=False)
            spans.append((len(text), len(text) + len(piece)))
            text += piece
        ranges = []
        if n == len(turns) - 1 and close in text:
            end = text.rfind(close)
            start = text.rfind(open_, 0, end)
            if start >= 0:
                ranges.append((start + len(open_), end))
        if calls and turn.tool_call is not None:  # formats write arguments as json.dumps
            args = json.dumps(turn.tool_call.arguments, ensure_ascii=False)
            end = text.rfind(args)
            if end >= 0:  # the reasoning that names the region, then the call up to its args
                tag = f"<{MODE_TAGS['tool']}>"
                start = text.find(tag) + len(tag) if tag in text[:end] else end
                ranges.append((start, end + len(args)))
        for lo, hi in ranges:
            for k, (s, e) in enumerate(spans):
                if s < hi and e > lo and traj.loss_mask[a0 + k]:
                    mask[a0 + k] = 1
    return mask


def _perception(run: StageRun, cfg: Config, heads: Any, seed: int) -> tuple[torch.Tensor,
                                                                            dict[str, float]]:
    st, policy = run.stage, run.policy
    difficulty = min(1.0, run.step / max(1, st.steps // 4))  # easy images first
    make = _domain(st).perception_batch
    # the domain options its perception_batch takes (driving: cue_only_share, rule): the
    # warm-up sees the mix training draws
    options = {k: v for k, v in cfg.domain.options.items()
               if k in inspect.signature(make).parameters}
    batch = shard(make(st.batch_size, seed, seen_fn(policy, cfg.agent), difficulty,
                       **dataset_args(cfg), **options), run.acc)
    where = heads["where"](pooled_features(policy, [b["overview"] for b in batch]))
    what = heads["what"](pooled_features(policy, [b["zoom"] for b in batch], st.what_pool))
    cells = torch.tensor([b["cell"] for b in batch], device=where.device)
    labels = torch.tensor([b["label"] for b in batch], device=what.device)
    lw, lc = F.cross_entropy(where, cells), F.cross_entropy(what, labels)
    return lw + lc, {"where_loss": lw.item(), "what_loss": lc.item(), "difficulty": difficulty,
                     "where_acc": (where.argmax(1) == cells).float().mean().item(),
                     "what_acc": (what.argmax(1) == labels).float().mean().item()}


def warmup_step(run: StageRun, cfg: Config, data: Any) -> dict[str, float]:
    st, policy = run.stage, run.policy
    if not hasattr(policy.core, HEADS):  # no prepare hook ran: only a fresh stage can recover
        if run.step:
            raise RuntimeError(f"stage {st.name}: warm-up heads missing at step {run.step}; "
                               "call warmup.prepare before building the StageRun")
        prepare(st, policy)
        run.__post_init__()  # rebuild optimiser and schedule with the heads (no state yet)
    heads = getattr(policy.core, HEADS)
    loss, metrics = _perception(run, cfg, heads, step_seed(cfg.train.seed, st.name, run.step))
    metrics["loss"] = loss.item()
    metrics["grad_norm"] = run.update(loss)
    if run.step + 1 >= st.steps:  # the last step: the model goes on without its heads
        remove(policy)
    return metrics


def readout_step(run: StageRun, cfg: Config, data: Any) -> dict[str, float]:
    """SFT on expert trajectories with the decision tokens weighted up: loss = NLL over all
    policy tokens + NLL over the decision tokens (the final answer during the first half of the
    stage; the answer and the tool-call arguments after it)."""
    st, policy = run.stage, run.policy
    with run.acc.main_process_first():
        batch = train_samples(cfg, policy, st, run.step, st.batch_size)
    mine = shard(expert_episodes(cfg, policy, batch, st.domain, run.step), run.acc)
    lps = policy.logprobs([trajectory.context(t) for t in mine])
    calls = run.step >= st.steps // 2
    lp, mask = pad_masked(lps, [t.loss_mask for t in mine])
    tag = answer_tag(get_domain(st.domain))
    _, dmask = pad_masked(lps, [decision_mask(policy, t, calls, tag) for t in mine])
    # token-level means over the whole batch (all ranks), as sft_step does
    full = sft_loss(lp, mask)[0] * run.global_share(float(mask.sum()))
    decisive = sft_loss(lp, dmask)[0] * run.global_share(float(dmask.sum()))
    metrics = {"loss": full.item() + decisive.item(), "decision_loss": decisive.item(),
               "tokens": float(mask.sum()), "decision_tokens": float(dmask.sum())}
    metrics["grad_norm"] = run.update(full + decisive, reduction="sum")
    return metrics


def load_data(st: StageConfig) -> None:
    _domain(st)  # fail at the start of the stage, not at its first step
    return None

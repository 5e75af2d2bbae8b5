"""The training step at scale, on the tiny model (CPU): micro-batches with gradient accumulation
give the one-batch update; gradient checkpointing gives the same gradients for fewer saved
activations; the activation memory of a GRPO step stays bounded as the group grows 4x; bf16
weights hash; the offloaded reference scores like the resident one; the shipped accelerate
configs parse; GSPO's published clip range. (Multi-rank DDP / FSDP: test_train_processes.py.)
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import DistributedType
from test_train import _run_for, cfg_file

from vlmagent import config
from vlmagent.train import online
from vlmagent.train.common import micro_batches

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers
class SavedActivations:
    """Peak bytes autograd holds for backward, parameters excluded, counted per storage through
    saved-tensor hooks: the activation part of what torch.cuda.max_memory_allocated reports on
    a GPU, measured on CPU (a CPU stand-in for the GPU's allocator statistics)."""

    def __init__(self, params: list[torch.Tensor]):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.live: dict[int, list[int]] = {}  # storage -> [bytes, saved references]
        self.now = self.peak = 0

    def _pack(self, t: torch.Tensor) -> object:
        key = t.untyped_storage().data_ptr()
        if key in self.skip or t.device.type == "meta":
            return t
        entry = self.live.setdefault(key, [t.untyped_storage().nbytes(), 0])
        if entry[1] == 0:
            self.now += entry[0]
            self.peak = max(self.peak, self.now)
        entry[1] += 1
        return _Held(t, key, self)

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[key]

    def __enter__(self):
        self.ctx = torch.autograd.graph.saved_tensors_hooks(
            self._pack, lambda h: h.t if isinstance(h, _Held) else h)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)


class _Held:
    def __init__(self, t, key, meter):
        self.t, self.key, self.meter = t, key, meter

    def __del__(self):
        self.meter._release(self.key)


def _dense(monkeypatch):
    """zoomqa with a dense answer check (share of vowels): every group has a reward spread."""
    from vlmagent.domains import DOMAINS, zoomqa

    dense = SimpleNamespace(**vars(zoomqa))
    dense.check = lambda text, s: sum(c in "aeiou" for c in text) / max(1, len(text))
    monkeypatch.setitem(DOMAINS, "dense", dense)


def _fixed_rollouts(monkeypatch, out):
    """online.sample_groups replaced by a recording that returns the first call's rollouts
    again: runs compared against each other train on the very same episodes."""
    real = online.sample_groups

    def fixed(run, cfg):
        if "v" not in out:
            trajs, rewards, samples = real(run, cfg)
            out["v"] = ([_cut(t, 3 * (i % 4)) for i, t in enumerate(trajs)], rewards, samples)
        return out["v"]

    monkeypatch.setattr(online, "sample_groups", fixed)


def _cut(t, k: int):
    """The episode without its last k sampled tokens (still an exact episode): unequal lengths,
    so token-level and sequence-level weighting differ and micro-batches pad differently."""
    if k == 0 or not all(t.loss_mask[-k:]):
        return t
    return replace(t, token_ids=t.token_ids[:-k], loss_mask=t.loss_mask[:-k],
                   logps=t.logps[:-k])


def _grads_at_step(run) -> list[list[torch.Tensor]]:
    """Records the (clipped) gradients the optimiser steps on."""
    seen: list[list[torch.Tensor]] = []
    inner = run.optimizer.step

    def spy(*a, **k):
        seen.append([p.grad.detach().clone() for p in run.trainable()])
        return inner(*a, **k)

    run.optimizer.step = spy
    return seen


def _max_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    scale = max(x.abs().max().item() for x in a)
    return max((x - y).abs().max().item() for x, y in zip(a, b)) / scale


# ---------------------------------------------------------------- micro-batches
def test_micro_batches_stay_within_the_token_budget():
    lengths = [50, 120, 80, 80, 30, 200, 10]
    parts = micro_batches(lengths, 240)
    assert sorted(i for p in parts for i in p) == list(range(7))  # each sequence once
    for p in parts:  # padded size = count x longest, within budget unless a sequence is alone
        assert len(p) * max(lengths[i] for i in p) <= 240 or len(p) == 1
    assert parts[0] == [5]  # 200: longest first; a second one would pad to 400
    assert micro_batches(lengths, 0) == [list(range(7))]  # 0: today's one pass, in order
    assert micro_batches([300], 100) == [[0]]  # longer than the budget: alone, not dropped
    assert micro_batches([], 100) == []


@pytest.mark.parametrize("stage", [
    dict(kind="grpo", token_level=True),  # DAPO token-level mean: weighted by tokens
    dict(kind="grpo", token_level=False, kl_coef=0.05),  # sequence mean + k3 KL to the ref
    dict(kind="gspo"),  # sequence-level ratio: weighted by sequences
])
def test_online_micro_batches_give_the_one_batch_update(tmp_path, tiny, monkeypatch, stage):
    """Same episodes, micro_batch_tokens 0 (one pass) vs a budget that makes several parts:
    the gradient the optimiser steps on agrees to float32 rounding, and so do the weights."""
    _dense(monkeypatch)
    cfg = config.load(cfg_file(tmp_path, tiny), ["train.defaults.domain=dense"])
    rollouts: dict = {}
    _fixed_rollouts(monkeypatch, rollouts)
    results = []
    for budget in (0, 1850):  # episodes here are 900-909 tokens: 2 per micro-batch
        run = _run_for(cfg, tiny, batch_size=2, group_size=4, max_new_tokens=12, lr=1e-3,
                       drop_equal_groups=False, micro_batch_tokens=budget, **stage)
        grads = _grads_at_step(run)
        m = online.online_step(run, cfg, None)
        results.append((grads[0], [p.detach().clone() for p in run.trainable()], m))
    (g1, w1, m1), (g2, w2, m2) = results
    assert m1["micro_batches"] == 1 and m2["micro_batches"] == 4
    assert _max_rel(g1, g2) < 1e-5  # measured ~5e-7: float32 summation order
    # Adam's first step is lr * g / (|g| + eps): entries whose |g| is near eps turn float32
    # rounding into a visible share of the step (measured 2e-5 = 2% of lr), so the weights
    # are compared at 5% of one step; the gradient above is the exact check
    assert max((a - b).abs().max().item() for a, b in zip(w1, w2)) < 0.05 * 1e-3
    assert m2["loss"] == pytest.approx(m1["loss"], rel=1e-5, abs=1e-7)


def test_sft_micro_batches_give_the_one_batch_update(tmp_path, tiny):
    cfg = config.load(cfg_file(tmp_path, tiny))
    from vlmagent.train import sft

    results = []
    for budget in (0, 200):
        run = _run_for(cfg, tiny, "sft", micro_batch_tokens=budget)
        grads = _grads_at_step(run)
        m = sft.sft_step(run, cfg, None)
        results.append((grads[0], m))
    (g1, m1), (g2, m2) = results
    assert m1["micro_batches"] == 1 and m2["micro_batches"] >= 2
    assert _max_rel(g1, g2) < 1e-5
    assert m2["loss"] == pytest.approx(m1["loss"], rel=1e-5)


# ---------------------------------------------------------------- memory
def _grpo_peak(cfg, tiny, group: int, budget: int, checkpointing: bool = False) -> tuple:
    run = _run_for(cfg, tiny, "grpo", batch_size=1, group_size=group, max_new_tokens=12,
                   drop_equal_groups=False, micro_batch_tokens=budget)
    if checkpointing:
        run.policy.core.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
        run.policy.model.train()
    with SavedActivations(list(run.policy.model.parameters())) as meter:
        m = online.online_step(run, cfg, None)
    return meter.peak, m


def test_grpo_step_activation_memory_stays_bounded_as_the_group_grows_4x(tmp_path, tiny,
                                                                         monkeypatch):
    """The stated bound (docs/training.md, "Scale"): with micro_batch_tokens fixed, the peak
    activation memory of one GRPO step at group size 4G is at most 1.3x that at G (one
    micro-batch's activations live at a time; the rest is the group's tiny [B, T] loss
    tensors). Without micro-batches it grows with the group (>= 3x here): the measure sees
    the batch, so the bound is not vacuous. Measured by saved-tensor hooks (CPU stand-in for
    torch.cuda.max_memory_allocated; the gpu test below checks the allocator itself)."""
    _dense(monkeypatch)
    cfg = config.load(cfg_file(tmp_path, tiny), ["train.defaults.domain=dense"])
    small, m_small = _grpo_peak(cfg, tiny, 2, 2000)
    big, m_big = _grpo_peak(cfg, tiny, 8, 2000)
    assert m_small["micro_batches"] == 1 and m_big["micro_batches"] == 4
    assert big <= 1.3 * small, (small, big)
    whole_small, _ = _grpo_peak(cfg, tiny, 2, 0)
    whole_big, _ = _grpo_peak(cfg, tiny, 8, 0)
    assert whole_big >= 3 * whole_small, (whole_small, whole_big)
    print(f"peak saved activations: micro G=2 {small / 2**20:.1f} MiB, G=8 {big / 2**20:.1f} "
          f"MiB; one batch G=2 {whole_small / 2**20:.1f}, G=8 {whole_big / 2**20:.1f} MiB")


def test_gradient_checkpointing_same_gradients_fewer_saved_activations(tmp_path, tiny):
    """policy.gradient_checkpointing: decoder layers recomputed in backward (non-reentrant):
    the SFT gradient is the plain one, and the activations held for backward shrink."""
    from vlmagent.policy import Policy
    from vlmagent.train import sft

    cfg = config.load(cfg_file(tmp_path, tiny))
    out = []
    for ckpt in (False, True):
        run = _run_for(cfg, tiny, "sft")
        run.policy = Policy.from_pretrained(tiny, gradient_checkpointing=ckpt)
        run.optimizer = torch.optim.AdamW(run.trainable(), lr=1e-3)
        grads = _grads_at_step(run)
        with SavedActivations(list(run.policy.model.parameters())) as meter:
            sft.sft_step(run, cfg, None)
        out.append((grads[0], meter.peak))
    (g1, plain), (g2, ckpt) = out
    assert _max_rel(g1, g2) < 1e-5
    assert ckpt < 0.7 * plain, (plain, ckpt)
    print(f"saved activations: plain {plain / 2**20:.1f} MiB, checkpointed {ckpt / 2**20:.1f} MiB")


# ---------------------------------------------------------------- bf16, reference, configs
def test_weights_digest_hashes_bf16_weights(tiny):
    """The end-of-stage digest works on a bf16 policy (numpy has no bfloat16) and still sees
    a one-ulp change; float32 digests are unchanged by the byte-view (same bytes)."""
    from vlmagent.policy import Policy
    from vlmagent.train.pipeline import weights_digest

    pol = Policy.from_pretrained(tiny, dtype="bfloat16")
    assert next(pol.model.parameters()).dtype == torch.bfloat16
    before = weights_digest(pol)
    p = next(pol.model.parameters())
    with torch.no_grad():  # the next bf16 value up: one ulp
        bits = p.view(-1)[:1].view(torch.int16)
        bits += 1
    assert len(before) == 64 and weights_digest(pol) != before


def test_offloaded_reference_scores_like_the_resident_one(tiny):
    """reference_offload: the frozen copy sits on CPU and is moved to the policy's device only
    inside visit() (recorded here; on this CPU-only machine both devices are the CPU, standing
    in for the accelerator), with the same log-probs as a resident copy."""
    from vlmagent.policy import Context, Policy

    pol = Policy.from_pretrained(tiny)
    ctx = [Context(pol.chat_tokens([{"role": "user", "content": "hi there"}],
                                   add_generation_prompt=True))]
    resident = online.Reference(pol)
    off = online.Reference(pol, offload=True)
    moves = []
    real_to = off.copy.model.to
    off.copy.model.to = lambda dev: moves.append(str(dev)) or real_to(dev)
    a, b = resident.logprobs(ctx)[0], off.logprobs(ctx)[0]
    assert torch.equal(a, b)
    assert moves == [str(pol.device), "cpu"]  # over for the call, back after
    assert all(p.device.type == "cpu" and not p.requires_grad for p in off.copy.model.parameters())
    with off.visit():  # several calls in one visit: one move each way
        off.logprobs(ctx), off.logprobs(ctx)
    assert moves[2:] == [str(pol.device), "cpu"]


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"),
                                       ("deepspeed_zero2", "DEEPSPEED"),
                                       ("deepspeed_zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_parse(name, kind):
    """configs/accelerate/*.yaml load with accelerate's own config loader (the DeepSpeed ones
    need `pip install deepspeed` to launch; they are parsed, not run, here)."""
    from accelerate.commands.config.config_args import load_config_from_file

    c = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
    assert c.distributed_type.name == kind and c.mixed_precision == "bf16"
    if kind == "FSDP":
        assert c.fsdp_config["fsdp_version"] == 2  # FSDP2: the one with a CPU path and
        assert c.fsdp_config["fsdp_reshard_after_forward"] is True  # gatherable weights
    if kind == "DEEPSPEED":
        assert c.deepspeed_config["zero_stage"] == int(name[-1])


def test_deepspeed_launch_is_refused_with_the_configs_that_work(tmp_path, tiny):
    """A DeepSpeed launch raises (its engine steps inside backward) and names ddp/fsdp."""
    from vlmagent.train.common import StageRun

    cfg = config.load(cfg_file(tmp_path, tiny))
    run = _run_for(cfg, tiny, "sft")
    run.acc = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    with pytest.raises(NotImplementedError) as e:
        StageRun._prepare(run)
    assert "inside its backward" in str(e.value)
    assert "ddp.yaml" in str(e.value) and "fsdp.yaml" in str(e.value)


def test_gspo_takes_its_published_clip_range_grpo_keeps_its_own(tmp_path, tiny):
    """GSPO (Zheng et al. 2025) clips its sequence-level ratio at 3e-4 / 4e-4, not GRPO's 0.2;
    an explicit setting still wins."""
    from vlmagent.config import StageConfig, resolve_stage

    d = config.load(cfg_file(tmp_path, tiny)).train.defaults  # as a YAML config gives them
    gspo = resolve_stage(d, StageConfig(kind="gspo"))
    assert (gspo.eps_low, gspo.eps_high) == (3e-4, 4e-4)
    grpo = resolve_stage(d, StageConfig(kind="grpo"))
    assert (grpo.eps_low, grpo.eps_high) == (0.2, 0.2)
    assert resolve_stage(d, StageConfig(kind="gspo", eps_high=1e-3)).eps_high == 1e-3
    assert resolve_stage(d, StageConfig(kind="grpo")).micro_batch_tokens == 0  # one pass


def test_gspo_clip_range_in_a_python_built_config_and_explicit_defaults_win():
    """A config built in Python (default TrainConfig(), no YAML) gives GSPO its own range too:
    the generic 0.2 is a built-in default, below the kind's; a value set in train.defaults
    (as a YAML would) still wins over the kind's."""
    from vlmagent.config import Config, StageConfig, resolve_stage

    d = Config().train.defaults
    assert (d.eps_low, d.eps_high) == (None, None)  # kind-dependent: filled at resolve time
    gspo = resolve_stage(d, StageConfig(kind="gspo"))
    assert (gspo.eps_low, gspo.eps_high) == (3e-4, 4e-4)
    grpo = resolve_stage(d, StageConfig(kind="grpo"))
    assert (grpo.eps_low, grpo.eps_high) == (0.2, 0.2)
    d.eps_low, d.eps_high = 0.1, 0.3  # set explicitly in train.defaults: wins for every kind
    assert (resolve_stage(d, StageConfig(kind="gspo")).eps_low,
            resolve_stage(d, StageConfig(kind="gspo")).eps_high) == (0.1, 0.3)
    d.kind = "gspo"  # the kind from defaults picks the kind's range as well
    d.eps_low = d.eps_high = None
    assert resolve_stage(d, StageConfig()).eps_high == 4e-4


@pytest.mark.gpu
def test_grpo_step_cuda_peak_memory_stays_bounded_as_the_group_grows_4x(tmp_path, tiny,
                                                                       monkeypatch):
    """The memory bound on a real accelerator: torch.cuda.max_memory_allocated over the
    training part of one GRPO step (after the rollouts), above what was allocated before it,
    at group size 4G is at most 1.3x that at G with micro_batch_tokens fixed."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (the CPU version above runs everywhere)")
    from vlmagent.policy import Policy

    _dense(monkeypatch)
    cfg = config.load(cfg_file(tmp_path, tiny), ["train.defaults.domain=dense"])
    real = online.sample_groups
    base = {}

    def sampled_then_reset(run, c):
        out = real(run, c)
        torch.cuda.synchronize()
        base["v"] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        return out

    monkeypatch.setattr(online, "sample_groups", sampled_then_reset)
    extra = {}
    for group, budget in ((2, 2000), (8, 2000), (2, 0), (8, 0)):
        run = _run_for(cfg, tiny, "grpo", batch_size=1, group_size=group, max_new_tokens=12,
                       drop_equal_groups=False, micro_batch_tokens=budget)
        run.policy = Policy.from_pretrained(tiny, device="cuda")
        run.optimizer = torch.optim.AdamW(run.trainable(), lr=1e-3)
        online.online_step(run, cfg, None)
        extra[group, budget] = torch.cuda.max_memory_allocated() - base["v"]
        del run
        torch.cuda.empty_cache()
    print({k: f"{v / 2**20:.1f} MiB" for k, v in extra.items()})
    assert extra[8, 2000] <= 1.3 * extra[2, 2000], extra
    assert extra[8, 0] >= 2 * extra[2, 0], extra

"""CUDA checks of the paths the GPU recipes (configs/gpu/) take, on the tiny model: sampled
log-probs against Policy.logprobs in float32 and bfloat16, and one GRPO step in bf16 (bf16
weights, full or LoRA with gradient checkpointing and micro-batches; and float32 weights under
accelerate's bf16 autocast). Each test is marked `gpu` and skips itself, saying why, when CUDA
is absent (the marker's documented behaviour, setup.cfg); on a GPU machine they run.

Elsewhere, not repeated here: placement across two devices (LM on cuda:0, vision tower on
cuda:1 or the CPU) is tests/test_placement.py::test_device_placement_across_real_devices; the
CUDA allocator's peak memory bound is
tests/test_scale.py::test_grpo_step_cuda_peak_memory_stays_bounded_as_the_group_grows_4x.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_scale import _dense
from test_train import cfg_file

from vlmagent import config
from vlmagent.config import LoraSettings, StageConfig, resolve_stage
from vlmagent.policy import Context, Policy
from vlmagent.train import online
from vlmagent.train.common import StageRun, make_accelerator
from vlmagent.train.pipeline import weights_digest

DEVICE = "cuda"

# |sampled - recomputed| logp per token. Measured on CPU (tiny model, 6 left-padded contexts
# with images, 32 sampled tokens each): float32 max 1e-6; bfloat16 mean 6e-4, max 4e-3. On
# CUDA the cached decode and the full forward use different attention kernels, so the bf16
# bounds leave a wide margin (about 20x); float32 stays near its rounding.
TOLERANCE = {"float32": {"max": 1e-3}, "bfloat16": {"mean": 1e-2, "max": 0.1}}


def _cuda() -> str:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (the CPU versions of these paths run in test_agent.py, "
                    "test_scale.py and test_gpu_recipes.py)")
    return DEVICE


def _contexts(pol: Policy) -> list[Context]:
    """Six prompts of different lengths, each with an image of its own size (left padding and
    several image grids in one batch)."""
    out = []
    for i in range(6):
        img = Image.new("RGB", (112 + 28 * (i % 3), 112), (40 * i, 200 - 30 * i, 90))
        ids = pol.chat_tokens([{"role": "user", "content": [
            {"type": "image", "image": img},
            {"type": "text", "text": "what colour is the shape" + " please" * i}]}],
            add_generation_prompt=True)
        out.append(Context(ids, [img], f"s{i}"))
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_sampled_logps_match_policy_logprobs(tiny, dtype):
    """The log-probs recorded while sampling on CUDA (the GRPO/GSPO `old_logps`) are those
    Policy.logprobs recomputes for the same tokens, within the stated tolerance."""
    dev = _cuda()
    pol = Policy.from_pretrained(tiny, dtype=dtype, device=dev)
    assert pol.device.type == torch.device(dev).type
    ctxs = _contexts(pol)
    gens = pol.generate(ctxs, max_new_tokens=32, temperature=1.0, seed=0)
    with torch.no_grad():
        lps = pol.logprobs([Context(c.token_ids + g.token_ids, c.images, c.id)
                            for c, g in zip(ctxs, gens)])
    diff = torch.cat([(lp[-len(g.token_ids):].float().cpu() - torch.tensor(g.logps)).abs()
                      for lp, g in zip(lps, gens)])
    assert len(diff) == sum(len(g.token_ids) for g in gens) > 0
    print(f"{dtype}: |sampled - recomputed| logp over {len(diff)} tokens: "
          f"mean {diff.mean().item():.2e}, max {diff.max().item():.2e}")
    tol = TOLERANCE[dtype]
    assert diff.max().item() < tol["max"]
    assert diff.mean().item() < tol.get("mean", tol["max"])


def _grpo_run(tmp_path: Path, tiny: Path, pol: Policy, acc=None, **stage) -> tuple:
    cfg = config.load(cfg_file(tmp_path, tiny), ["train.defaults.domain=dense"])
    st = resolve_stage(cfg.train.defaults, StageConfig(
        kind="grpo", batch_size=2, group_size=4, max_new_tokens=12, lr=1e-3,
        drop_equal_groups=False, micro_batch_tokens=2000, **stage))  # ~900-token episodes
    out = Path(cfg.train.output_dir) / st.name
    out.mkdir(parents=True, exist_ok=True)
    return cfg, StageRun(st, pol, acc or make_accelerator(out), out, 0)


def _check_step(run: StageRun, m: dict, before: list[torch.Tensor], digest: str) -> None:
    assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    assert m["micro_batches"] >= 2  # gradients accumulated over micro-batches
    after = run.trainable()
    assert all(bool(torch.isfinite(p).all()) for p in after)
    assert any(bool((p.detach() != b).any()) for p, b in zip(after, before))
    new = weights_digest(run.policy)
    assert len(new) == 64 and new != digest


@pytest.mark.gpu
@pytest.mark.parametrize("weights", ["full", "lora"])
def test_bf16_grpo_step_on_cuda(tmp_path, tiny, monkeypatch, weights):
    """One GRPO step on CUDA with bf16 weights, gradient checkpointing, micro-batches and a k3
    KL term: finite loss and gradient, the weights move, weights_digest hashes them. Full:
    bf16 weights and the offloaded reference copy (back on the CPU after the step); LoRA (the
    recipes' setting): fp32 adapters on the bf16 base, the adapter-disabled reference."""
    dev = _cuda()
    _dense(monkeypatch)
    lora = LoraSettings(rank=8, alpha=16) if weights == "lora" else None
    pol = Policy.from_pretrained(tiny, dtype="bfloat16", device=dev, lora=lora,
                                 gradient_checkpointing=True)
    cfg, run = _grpo_run(tmp_path, tiny, pol, kl_coef=0.05,
                         reference_offload=weights == "full")
    before = [p.detach().clone() for p in run.trainable()]
    digest = weights_digest(pol)
    m = online.online_step(run, cfg, None)
    _check_step(run, m, before, digest)
    want = torch.float32 if lora else torch.bfloat16
    assert {p.dtype for p in run.trainable()} == {want}
    assert {p.device.type for p in pol.model.parameters()} == {torch.device(dev).type}
    if weights == "full":
        assert {p.device.type for p in run.reference.copy.model.parameters()} == {"cpu"}
    else:
        assert run.reference.copy is None  # the base model, adapters disabled


@pytest.mark.gpu
def test_amp_grpo_step_on_cuda(tmp_path, tiny, monkeypatch):
    """The full recipe's precision: float32 weights and AdamW state, accelerate's bf16
    autocast in the training forward (mixed_precision bf16, as configs/accelerate/ddp.yaml):
    the training forward's matmuls run in bf16, the weights stay float32 and move."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    dev = _cuda()
    _dense(monkeypatch)
    pol = Policy.from_pretrained(tiny, dtype="float32", device=dev)
    seen: set[torch.dtype] = set()
    layer = pol.core.model.language_model.layers[0].mlp.down_proj
    hook = layer.register_forward_hook(
        lambda mod, args, out: seen.add(out.dtype) if torch.is_grad_enabled() else None)
    AcceleratorState._reset_state(True)  # the session's accelerator state has no autocast
    run = None
    try:
        acc = Accelerator(cpu=dev == "cpu", mixed_precision="bf16")
        cfg, run = _grpo_run(tmp_path, tiny, pol, acc)
        assert run.wrapped is not None  # the forward is accelerate's (autocast inside)
        before = [p.detach().clone() for p in run.trainable()]
        digest = weights_digest(pol)
        m = online.online_step(run, cfg, None)
        _check_step(run, m, before, digest)
    finally:
        hook.remove()
        if run is not None:
            run.close()
        AcceleratorState._reset_state(True)
    assert seen == {torch.bfloat16}
    assert {p.dtype for p in pol.model.parameters()} == {torch.float32}

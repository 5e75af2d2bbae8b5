"""The GPU recipes (configs/gpu/*.yaml: Qwen2.5-VL-3B LoRA and full, 7B LoRA, on the driving
domain) load with the strict config loader, resolve their stages, and are what their header
comments say: the dtype, the micro-batch budget and its memory arithmetic (recomputed here from
the models' shapes, so the comments cannot drift), the reference handling, GSPO's clip range,
the launch line and the commented rollout-server block. Then, on CPU, the two precision facts
the recipes rest on: bf16 weights round RL-sized AdamW updates away (so the full recipe keeps
float32 master weights), while LoRA adapters on a bf16 base are float32 and do move.

Nothing here needs a GPU or the models: the recipes themselves have not run on a GPU here.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from test_config import _assert_file_values

from vlmagent import config
from vlmagent.images import Budget
from vlmagent.train.pipeline import resolve_stages

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs" / "gpu").glob("*.yaml"))
NAMES = [p.stem for p in RECIPES]

# Published shapes (the models' config.json): text decoder and the shared 675M vision tower.
SHAPES = {
    "3b": dict(params=3.75e9, layers=36, hidden=2048, inter=11008, kv=2 * 128),
    "7b": dict(params=8.29e9, layers=28, hidden=3584, inter=18944, kv=4 * 128),
}
VISION = dict(depth=32, hidden=1280, patches_per_token=4)
GPU_GB = 80.0  # the recipes are sized for an 80 GB GPU (H100)
RESERVE_GB = 6.0  # CUDA context, fragmentation, workspaces: the recipes' stated reserve
NUSC_CAMERA = (1600, 900)  # nuScenes camera frames


def header(path: Path) -> str:
    """The leading comment block as one line of text (line breaks and '#' removed)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(x for x in lines if x)


def shape_of(name: str) -> dict:
    return SHAPES[name.split("_")[1]]


def lora_params(s: dict, rank: int) -> float:
    """LoRA on the 7 projections of every decoder layer: rank x (fan-in + fan-out) each."""
    h, i, kv = s["hidden"], s["inter"], s["kv"]
    per_layer = (h + h) + (h + kv) * 2 + (h + h) + 3 * (h + i)
    return rank * per_layer * s["layers"]


def per_token_mb(s: dict, cfg: config.Config, trainable_vision: bool) -> float:
    """Activation bytes per padded token with gradient checkpointing (bf16): the decoder
    layers' inputs kept, one layer recomputed in backward with its gradients, and for a
    trainable vision tower its blocks' inputs for the episode's share of visual tokens."""
    kept = s["layers"] * s["hidden"] * 2
    layer = 2 * (6 * s["hidden"] + 4 * s["inter"]) * 2
    total = kept + layer
    if trainable_vision:
        budget = Budget(28, cfg.agent.min_pixels, cfg.agent.max_pixels)
        per_image = budget.tokens(budget.seen_size(*NUSC_CAMERA))
        images = 1 + cfg.agent.max_tool_calls  # the front camera and one image per tool call
        share = images * per_image / cfg.agent.max_total_tokens
        total += VISION["depth"] * VISION["hidden"] * 2 * VISION["patches_per_token"] * share
    return total / 1e6


def left_gb(s: dict, cfg: config.Config) -> float:
    """What is left of the GPU for activations once weights, optimiser state and the reserve
    are placed (the recipes' own accounting)."""
    p = s["params"]
    if cfg.policy.lora is not None:  # bf16 frozen base; fp32 adapters, grads, 2 AdamW moments
        fixed = p * 2 + lora_params(s, cfg.policy.lora.rank) * 16
    else:  # fp32 weights, grads, 2 moments, plus autocast's bf16 weight copies in a forward
        fixed = p * (4 + 4 + 8) + p * 2
    return GPU_GB - fixed / 1e9 - RESERVE_GB


def test_there_are_the_three_recipes():
    assert NAMES == ["qwen25vl_3b_full_grpo", "qwen25vl_3b_lora_grpo", "qwen25vl_7b_lora_grpo"]


@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_recipe_loads_strictly_and_resolves_its_stages(path: Path):
    name = path.stem
    cfg = config.load(path)
    _assert_file_values(yaml.safe_load(path.read_text()), config.to_dict(cfg), path.name)
    stages = resolve_stages(cfg)
    assert [(s.name, s.kind) for s in stages] == [("dm_sft", "sft"), ("fcm_rl", "grpo"),
                                                  ("ams_rl", "gspo")]
    assert {s.domain for s in stages} == {"driving"} and cfg.domain.name == "driving"
    assert cfg.domain.version == "v1.0-trainval" and cfg.agent.format == "drive"
    size = name.split("_")[1].upper()
    assert cfg.policy.path == f"Qwen/Qwen2.5-VL-{size}-Instruct"
    assert cfg.policy.gradient_checkpointing is True and cfg.policy.device == "auto"
    lora = "_lora_" in name
    assert (cfg.policy.lora is not None) == lora
    # LoRA: bf16 frozen base (the adapters are fp32, test below); full: fp32 master weights
    assert cfg.policy.dtype == ("bfloat16" if lora else "float32")
    grpo, gspo = stages[1], stages[2]
    assert grpo.kl_coef > 0 and grpo.mode_groups and grpo.group_size % 2 == 0
    assert gspo.kl_coef == 0 and gspo.adaptive_mode
    published = (3e-4, 4e-4)  # GSPO (Zheng et al. 2025), also kind gspo's built-in default
    assert (gspo.eps_low, gspo.eps_high) == published
    assert tuple(config.KIND_DEFAULTS["gspo"].values()) == published
    # the reference: adapter-disabled with LoRA (nothing to offload), an offloaded copy when full
    assert all(bool(s.reference_offload) == (not lora) for s in stages)
    # every stage micro-batches, and one whole episode always fits a micro-batch
    assert all(s.micro_batch_tokens >= cfg.agent.max_total_tokens for s in stages)
    assert len({s.micro_batch_tokens for s in stages}) == 1


@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_recipe_memory_arithmetic_is_what_its_comment_says(path: Path):
    """The header's numbers, recomputed from the shapes: per-token activations, what is left
    of 80 GB, the micro-batch's share of it (at most a third), the dtype, the image tokens."""
    cfg = config.load(path)
    text = header(path)
    s = shape_of(path.stem)
    lora = cfg.policy.lora is not None
    [(dtype, params)] = re.findall(r"policy\.dtype (\w+); ([\d.e]+) parameters", text)
    assert dtype == cfg.policy.dtype and float(params) == s["params"]
    [(tokens, mb, gb, pct, left)] = re.findall(
        r"micro_batch_tokens (\d+) x ([\d.]+) MB = ([\d.]+) GB of activations, (\d+)% of the "
        r"([\d.]+) GB left", text)
    assert int(tokens) == resolve_stages(cfg)[0].micro_batch_tokens
    assert float(re.search(r"=> ([\d.]+) MB per padded token", text)[1]) == float(mb)
    want_mb = per_token_mb(s, cfg, trainable_vision=not lora)
    want_left = left_gb(s, cfg)
    assert float(mb) == pytest.approx(want_mb, abs=0.006)
    assert float(left) == pytest.approx(want_left, abs=0.06)
    assert float(gb) == pytest.approx(int(tokens) * want_mb / 1e3, abs=0.06)
    assert int(pct) == round(100 * int(tokens) * want_mb / 1e3 / want_left)
    assert int(pct) <= 33  # activations take at most a third of what is left
    budget = Budget(28, cfg.agent.min_pixels, cfg.agent.max_pixels)
    per_image = budget.tokens(budget.seen_size(*NUSC_CAMERA))
    assert per_image == 390 and f"{per_image} visual tokens" in path.read_text()
    n = int(tokens) // cfg.agent.max_total_tokens  # whole episodes per micro-batch
    assert ("one episode per micro-batch" if n == 1 else f"{n} episodes of") in text


@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_recipe_header_names_the_launch_and_the_honest_status(path: Path):
    text = header(path)
    assert ("accelerate launch --config_file configs/accelerate/ddp.yaml -m vlmagent.cli "
            f"train \\ configs/gpu/{path.name}") in text
    assert "a DeepSpeed launch is refused with the reason" in text  # what works, what does not
    assert "not run in this repository yet" in text
    ddp = yaml.safe_load((REPO / "configs" / "accelerate" / "ddp.yaml").read_text())
    assert ddp["mixed_precision"] == "bf16"  # the full recipe's bf16 comes from here


@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_commented_rollout_block_loads_when_uncommented(path: Path, tmp_path: Path):
    lines = path.read_text().splitlines()
    start = lines.index("# rollout:")
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("#   "):
            break
        block.append(line)
    uncommented = "\n".join(x[2:] for x in block)
    (tmp_path / "r.yaml").write_text(path.read_text() + "\n" + uncommented + "\n")
    cfg = config.load(tmp_path / "r.yaml")
    assert (cfg.rollout.engine, cfg.rollout.wire) == ("openai", "sglang")
    assert cfg.rollout.weight_sync == ("lora" if cfg.policy.lora else "full")
    assert resolve_stages(cfg)[1].tis_cap == 2.0


# ---------------------------------------------------------------- the precision facts
def test_bf16_weights_round_rl_updates_away_fp32_master_weights_keep_them():
    """One AdamW step at the full recipe's RL learning rate moves every weight by about lr
    (Adam's first step is lr x sign(g)): on float32 weights of Qwen-like magnitude all of them
    move, on bfloat16 weights (half an ulp of 0.02 is 6e-5) almost none do."""
    cfg = config.load(REPO / "configs" / "gpu" / "qwen25vl_3b_full_grpo.yaml")
    lr = resolve_stages(cfg)[1].lr
    assert lr == 1e-6
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(100_000, generator=g) * 0.02
    grad = torch.randn(100_000, generator=g)
    moved = {}
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.nn.Parameter(w0.to(dtype))
        before = w.detach().clone()
        opt = torch.optim.AdamW([w], lr=lr, weight_decay=0.0)
        w.grad = grad.to(dtype)
        opt.step()
        moved[dtype] = (w.detach() != before).float().mean().item()
    assert moved[torch.float32] == 1.0
    assert moved[torch.bfloat16] < 0.05, moved  # measured 0.020: only the tiniest weights
    print(f"share of weights an AdamW step at lr {lr} moves: {moved}")


def test_lora_adapters_on_a_bf16_base_are_float32_and_move(tiny):
    """The LoRA recipes' policy.dtype bfloat16 applies to the frozen base only: peft keeps the
    adapters (and so AdamW's state) in float32, and a step at the recipe's RL lr moves them."""
    from vlmagent.policy import Policy

    cfg = config.load(REPO / "configs" / "gpu" / "qwen25vl_3b_lora_grpo.yaml")
    lr = resolve_stages(cfg)[1].lr
    pol = Policy.from_pretrained(tiny, dtype=cfg.policy.dtype, lora=cfg.policy.lora)
    train = [p for p in pol.model.parameters() if p.requires_grad]
    frozen = [p for p in pol.model.parameters() if not p.requires_grad]
    assert {p.dtype for p in train} == {torch.float32}
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    before = [p.detach().clone() for p in train]
    opt = torch.optim.AdamW(train, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for p in train:
        # never zero: CPU randn returns an exact 0 when its uniform draw is 0 (about one in
        # 2^24 pairs, so a few percent of runs over ~10^6 adapter weights), and AdamW does not
        # move a weight whose gradient is 0
        sign = torch.randint(0, 2, p.shape, generator=gen).mul(2).sub(1)
        p.grad = (torch.rand(p.shape, generator=gen) + 0.5) * sign
    opt.step()
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())
    assert all(bool((p.detach() != b).all()) for p, b in zip(train, before))

"""Tokens/s per GPU of GRPO steps on a Qwen2.5-VL-3B-SHAPED model, through vlmagent's own path,
next to EasyR1's published 1,800 tokens/s/GPU.

    python benchmarks/gpu_step.py                 # CUDA: 3B shape, bf16 weights; CPU: tiny shape
    python benchmarks/gpu_step.py --steps 3 --prompts 8 --group 8 --new-tokens 512 [--amp]

Model: randomly initialised from Qwen2.5-VL-3B-Instruct's published config (text: hidden 2048,
36 layers, 16 heads, 2 KV heads, intermediate 11008, vocab 151936, tied embeddings, mrope
[16, 24, 24]; vision: depth 32, hidden 1280, intermediate 3420, 16 heads, patch 14, window 112,
full attention in blocks 7/15/23/31), built on the device; no weights are downloaded. Its
processor and tokenizer are the tiny model's (vlmagent.tiny.make_tiny): same image processing
(patch 14, merge 2), small vocabulary; the model still scores all 151936 ids. `--shape tiny` is
vlmagent's tiny model (the default without CUDA): CPU, tiny shape, NOT comparable to GPU numbers.

One step = `vlmagent.train.online.online_step` on a StageRun (kind grpo): the step's zoom-QA
prompts (one --image px image each, system prompt with tool specs), --group rollouts each
through agent.rollout (Policy.generate: exact tokens, sampled logps), rewards, group
advantages, the GRPO loss forward/backward in micro-batches of --micro-batch-tokens, grad clip,
one AdamW step. Weights: bf16 (policy.dtype bfloat16), full fine-tune unless --lora R;
gradient checkpointing on for the 3B shape. --amp: float32 weights and AdamW state, bf16
autocast in the training forward (accelerate mixed_precision bf16; EasyR1's "AMP" row);
rollouts then run in float32. The reward (text length mod 5) is synthetic: it only gives every
group a spread so the loss is not zero; a random model's answers are noise.

Tokens, counted like EasyR1's perf/throughput (verl trainer/metrics.py): every token of every
rollout (prompt with its image tokens + response) / step seconds / GPUs (one process, one GPU
here). Also printed: generated tokens/s (response tokens / rollout seconds) and trained tokens/s
(all rollout tokens / seconds after the rollout: loss forward, backward, optimiser step).

EasyR1 reference (assets/baselines.md, v0.3.2): Qwen2.5-VL-3B GRPO on Geometry3k, 8 x H100
80GB, AMP, vLLM rollouts (TP 2), 120 s/step, 1800 tokens/s/GPU. Not like for like: EasyR1
generates with vLLM and trains with FSDP over 8 GPUs, recomputes old and reference log-probs,
and its responses are real (up to 2048 tokens); here generation is the in-process
Policy.generate, one GPU, no reference (kl 0), random responses of exactly --new-tokens tokens.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

EASYR1_TOKENS_PER_S_PER_GPU = 1800.0
DOMAIN = "gpu_bench"


def qwen25vl_3b_config(tiny_config):
    """Qwen2.5-VL-3B-Instruct's shape, with the tiny tokenizer's special token ids."""
    from transformers import Qwen2_5_VLConfig

    t = tiny_config.text_config
    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                max_position_embeddings=128000, rms_norm_eps=1e-6, tie_word_embeddings=True,
                bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id,
                pad_token_id=t.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                 "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=2048, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                  tokens_per_second=2)
    ids = {k: getattr(tiny_config, k) for k in ("image_token_id", "video_token_id",
                                                "vision_start_token_id", "vision_end_token_id")}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                            **ids)


def build_policy(args):
    from transformers import AutoModelForImageTextToText

    from vlmagent.config import LoraSettings
    from vlmagent.modelio import add_lora, unwrap
    from vlmagent.policy import Policy
    from vlmagent.tiny import make_tiny

    dtype = torch.float32 if args.amp else args.dtype
    tiny, processor = make_tiny("qwen2_5_vl", 0, 28 * 28, args.image * args.image)
    if args.shape == "tiny":
        model = tiny.to(device=args.device, dtype=dtype)
    else:
        torch.manual_seed(0)
        with torch.device(args.device):  # initialised on the GPU, not copied there
            model = AutoModelForImageTextToText.from_config(qwen25vl_3b_config(tiny.config),
                                                            dtype=dtype)
        model.generation_config = tiny.generation_config
        model.to(args.device).eval()
    # what Policy.from_pretrained does after loading (adapters, frozen tower, checkpointing)
    if args.lora:
        model = add_lora(model, LoraSettings(rank=args.lora, alpha=2 * args.lora))
        for p in unwrap(model).model.visual.parameters():
            p.requires_grad_(False)
    if args.checkpointing:
        unwrap(model).gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    return Policy(model, processor)


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=("3b", "tiny"), default="3b" if cuda else "tiny")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts", type=int, help="prompts per step (3b: 8, tiny: 2)")
    ap.add_argument("--group", type=int, help="rollouts per prompt (3b: 8, tiny: 4)")
    ap.add_argument("--new-tokens", type=int, help="response tokens (3b: 512, tiny: 16)")
    ap.add_argument("--image", type=int, help="image side in px (3b: 448, tiny: 224)")
    ap.add_argument("--micro-batch-tokens", type=int, help="(3b: 16384, tiny: 2048)")
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank (0: full weights)")
    ap.add_argument("--amp", action="store_true", help="fp32 weights + bf16 autocast")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    big = args.shape == "3b"
    for key, a, b in (("prompts", 8, 2), ("group", 8, 4), ("new_tokens", 512, 16),
                      ("image", 448, 224), ("micro_batch_tokens", 16384, 2048)):
        if getattr(args, key) is None:
            setattr(args, key, a if big else b)
    args.dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    args.checkpointing = big
    comparable = big and args.device.startswith("cuda")

    from accelerate import Accelerator

    from vlmagent import config
    from vlmagent.domains import DOMAINS, zoomqa
    from vlmagent.train import online
    from vlmagent.train.common import StageRun

    bench = SimpleNamespace(**vars(zoomqa))  # zoom-QA prompts, synthetic spread-giving reward
    bench.check = lambda text, sample: (len(text) % 5) / 4
    DOMAINS[DOMAIN] = bench

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    rollouts: list[tuple[float, list]] = []
    sample_groups = online.sample_groups

    def timed_rollout(run, cfg):  # the rollout phase of online_step, timed; same return
        sync()
        t0 = time.perf_counter()
        out = sample_groups(run, cfg)
        sync()
        rollouts.append((time.perf_counter() - t0, out[0]))
        return out

    online.sample_groups = timed_rollout
    policy = build_policy(args)
    n_params = sum(p.numel() for p in policy.model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.Config()
        cfg = replace(
            cfg, agent=replace(cfg.agent, min_pixels=28 * 28, max_pixels=args.image ** 2,
                               max_new_tokens=args.new_tokens,
                               max_total_tokens=args.new_tokens + 4096),
            domain=replace(cfg.domain, name=DOMAIN, kinds=["color"],
                           size=[args.image, args.image], data_dir=f"{tmp}/data"),
            train=replace(cfg.train, output_dir=tmp))
        stage = config.resolve_stage(cfg.train.defaults, config.StageConfig(
            name="bench", kind="grpo", domain=DOMAIN, batch_size=args.prompts,
            group_size=args.group, max_new_tokens=args.new_tokens, lr=1e-6,
            drop_equal_groups=False, micro_batch_tokens=args.micro_batch_tokens))
        acc = Accelerator(cpu=not args.device.startswith("cuda"),
                          mixed_precision="bf16" if args.amp else "no")
        run = StageRun(stage, policy, acc, Path(tmp), 0)
        steps = []
        for i in range(args.warmup + args.steps):
            if i == args.warmup and args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            m = online.online_step(run, cfg, None)
            sync()
            step_s = time.perf_counter() - t0
            run.step += 1
            roll_s, trajs = rollouts[-1]
            assert m["loss"] == m["loss"], "loss is NaN"
            steps.append(dict(step_s=step_s, rollout_s=roll_s, episodes=len(trajs),
                              tokens=sum(len(t.token_ids) for t in trajs),
                              generated=sum(sum(t.loss_mask) for t in trajs),
                              micro_batches=m.get("micro_batches"), loss=m["loss"]))
    timed = steps[args.warmup:]
    med = {k: statistics.median(s[k] for s in timed) for k in ("step_s", "rollout_s",
                                                               "tokens", "generated")}
    total = med["tokens"] / med["step_s"]
    device = (f"1 x {torch.cuda.get_device_name(args.device)}"
              if args.device.startswith("cuda") else "CPU")
    result = {
        "device": device, "shape": args.shape, "parameters": n_params,
        "precision": "amp (fp32 weights, bf16 autocast)" if args.amp else str(args.dtype),
        "weights": f"lora r{args.lora}" if args.lora else "full",
        "gradient_checkpointing": args.checkpointing, "prompts": args.prompts,
        "group": args.group, "new_tokens": args.new_tokens, "image": args.image,
        "micro_batch_tokens": args.micro_batch_tokens, "timed_steps": len(timed),
        "step_s": round(med["step_s"], 3), "rollout_s": round(med["rollout_s"], 3),
        "tokens_per_step": med["tokens"], "generated_per_step": med["generated"],
        "tokens_per_s_per_gpu": round(total, 1),
        "generated_tokens_per_s": round(med["generated"] / med["rollout_s"], 1),
        "trained_tokens_per_s": round(med["tokens"] / (med["step_s"] - med["rollout_s"]), 1),
        "easyr1_tokens_per_s_per_gpu": EASYR1_TOKENS_PER_S_PER_GPU,
        "ratio_to_easyr1": round(total / EASYR1_TOKENS_PER_S_PER_GPU, 3),
        "comparable": comparable, "steps": steps,
    }
    if args.device.startswith("cuda"):
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    label = ("" if comparable else
             f"{device}, {args.shape} shape: not comparable to the GPU number. ")
    note = "" if comparable else " (meaningless here)"
    unit = "tokens/s/GPU" if args.device.startswith("cuda") else "tokens/s (one CPU process)"
    size = f"{n_params / 1e9:.2f}B" if n_params >= 1e9 else f"{n_params / 1e6:.2f}M"
    print(f"{label}GRPO step, {args.shape} shape ({size} parameters, random), "
          f"{result['precision']}, {result['weights']} weights, {args.prompts} prompts x "
          f"{args.group} rollouts x {args.new_tokens} new tokens, {device}: "
          f"{total:,.0f} {unit} (prompt + image + response tokens of every rollout / "
          f"step time, EasyR1's perf/throughput) vs EasyR1's published "
          f"{EASYR1_TOKENS_PER_S_PER_GPU:,.0f} (Qwen2.5-VL-3B GRPO, 8 x H100, v0.3.2) = "
          f"{result['ratio_to_easyr1']:.2f}x{note}; generated "
          f"{result['generated_tokens_per_s']:,.0f} tokens/s in the rollout, trained "
          f"{result['trained_tokens_per_s']:,.0f} tokens/s in the update; "
          f"step {med['step_s']:.2f} s (rollout {med['rollout_s']:.2f} s)")


if __name__ == "__main__":
    main()

"""Samples/s of ONE online GRPO step: vlmagent's `online_step` vs TRL's `GRPOTrainer`, same work.

    python benchmarks/online_step.py [--prompts 4] [--group 8] [--new-tokens 32] [--size 224]
                                     [--rounds 2] [--steps 3] [--warmup 2]

Both sides train the same tiny Qwen2.5-VL (built offline with `vlmagent.tiny.build_tiny` into a
temp dir; both load the same files, float32, full weights, CPU) on the same batch: `--prompts`
zoom-QA prompts, each with one `--size` x `--size` image (the model sees it at that size:
(size/28)^2 image tokens), system prompt + image + question, token-identical on both sides
(checked before timing). One step, on each side:

  1. generate `--group` completions per prompt (sampling, temperature 1, top_p 1), exactly
     `--new-tokens` tokens each (see "fixed length" below), with the image in context;
  2. score each with the same reward (`zoomqa.check`: 1 when the <answer> matches);
  3. group advantages (r - group mean) / group std; no KL, no reference model;
  4. one clipped-surrogate GRPO loss (eps 0.2, per-sequence token mean, then batch mean),
     backward, grad-norm clip 1.0, one AdamW step (constant lr, weight decay 0).

vlmagent: `vlmagent.train.online.online_step` through the real path (Config + StageRun with a
resolved grpo StageConfig: batch_size=prompts, group_size, max_new_tokens, epochs_per_batch 1,
kl_coef 0, drop_equal_groups off so every step updates; domain zoomqa with
`domain.size=[size, size]`, `agent.max_turns=1`, `agent.tools=[]`). The step includes what that
path does: reading the step's samples from data_dir, building prompts and decoding the PNGs,
the rollout (logps kept from sampling), rewards, the loss forward/backward and the update.
TRL: `GRPOTrainer.train()` on a dataset of the same prompts (conversational, `image` column),
`per_device_train_batch_size = prompts * group`, `num_generations = group`, gradient
accumulation 1 and `num_iterations` 1 (so TRL, like vlmagent, makes no extra forward for old
logps), `loss_type="grpo"`, `beta=0`, `scale_rewards="group"`, no vLLM, `use_cpu`, bf16 off,
gradient checkpointing off (TRL's default is on; off is its faster setting here), no shuffling,
logging/saving off, `report_to="none"`. A TRL step is timed from one optimiser step's end to the
next (dataloader fetch + generation + reward + loss + backward + optimiser step).

Fixed length: the model gets an LM-head bias (same on both sides, frozen) of -1e4 on every
token that can end or break a completion (eos/pad ids, `</tool_call>` which is vlmagent's
hermes stop string, image/video/vision pad and delimiters), so neither side can stop early and
both generate exactly `--new-tokens` tokens per completion (asserted on both sides).

Threads: `--threads` (default 1) torch threads, the same for both (one process).
Timing: both warm up first; then `--rounds` rounds, each timing `--steps` vlmagent steps and
then `--steps` TRL steps (interleaved, so load from other work on the machine hits both);
medians of per-step times. samples/s = prompts * group / median step seconds.
Printed: which CPU and how many torch threads produced the numbers, both rates as JSON, and the
ratio vlmagent/TRL (goal >= 1.2).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

BANNED_TOKENS = ("<|im_end|>", "<|endoftext|>", "</tool_call>", "<|image_pad|>", "<|video_pad|>",
                 "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")


def fixed_length_head(model: torch.nn.Module, tokenizer) -> None:
    """Give `model` an LM head whose frozen bias makes every stopping token unsampleable."""
    old = model.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    head.weight = old.weight  # the same Parameter: trained as before
    bias = torch.zeros(old.out_features)
    bias[[tokenizer.convert_tokens_to_ids(t) for t in BANNED_TOKENS]] = -1e4
    head.bias = torch.nn.Parameter(bias, requires_grad=False)
    model.lm_head = head


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--size", type=int, default=224, help="image side in pixels (multiple of 28)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for both sides (default 1: on a small shared "
                         "machine, OpenMP threads competing with other work make timings noise)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    import trl
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.data_utils import prepare_multimodal_messages

    from vlmagent.config import AgentConfig, Config, DomainConfig, StageConfig, resolve_stage
    from vlmagent.domains import zoomqa
    from vlmagent.policy import Policy
    from vlmagent.tiny import build_tiny
    from vlmagent.train.common import StageRun, make_accelerator
    from vlmagent.train.data import train_samples
    from vlmagent.train.online import online_step, sample_groups

    B, G, L = args.prompts, args.group, args.new_tokens
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        path = build_tiny(tmp / "tiny")

        # ------------------------------------------------------------ vlmagent
        cfg = Config(agent=AgentConfig(tools=[], max_turns=1),
                     domain=DomainConfig(size=[args.size, args.size], data_dir=str(tmp / "data")))
        cfg.train.output_dir = str(tmp / "train")
        stage = resolve_stage(cfg.train.defaults, StageConfig(
            name="grpo", kind="grpo", domain="zoomqa", steps=10 ** 6, lr=args.lr, warmup_steps=0,
            schedule="constant", batch_size=B, group_size=G, epochs_per_batch=1,
            max_new_tokens=L, temperature=1.0, kl_coef=0.0, eps_low=0.2, eps_high=0.2,
            token_level=False, drop_equal_groups=False, mode_groups=False, tool_bonus=0.0,
            n_train=B))  # n_train == batch: every step draws the same B prompts
        policy = Policy.from_pretrained(path, device="cpu")
        fixed_length_head(policy.core, policy.tokenizer)
        sdir = Path(cfg.train.output_dir) / stage.name
        sdir.mkdir(parents=True)
        run = StageRun(stage, policy, make_accelerator(Path(cfg.train.output_dir)), sdir,
                       cfg.train.seed)
        samples = train_samples(cfg, policy, stage, 0, B)  # what every step reads back
        by_id = {s.id: s for s in samples}

        # Fixed length and prompt tokens, checked on the real paths before timing.
        trajs, _, _ = sample_groups(run, cfg)
        lengths = {sum(t.loss_mask) for t in trajs}
        assert len(trajs) == B * G and lengths == {L}, f"vlmagent lengths {lengths}, want {L}"
        system = cfg.agent.system_prompt
        vlm_prompts = [t.token_ids[:t.turns[1].span[1]] for t in trajs[::G]]

        # ------------------------------------------------------------ TRL
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
        fixed_length_head(model, processor.tokenizer)
        images = [Image.open(s.images["image"]).convert("RGB") for s in samples]
        assert all(im.size == (args.size, args.size) for im in images)
        prompts = [[{"role": "system", "content": system}, {"role": "user", "content": s.prompt}]
                   for s in samples]
        for p, im, want in zip(prompts, images, vlm_prompts):
            msgs = prepare_multimodal_messages(p, images=[im])
            got = processor.apply_chat_template([msgs], add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"][0]
            got = got.tolist() if hasattr(got, "tolist") else list(got)
            assert got == want, "TRL and vlmagent prompts differ"
        dataset = Dataset.from_dict({"prompt": prompts, "image": images,
                                     "sid": [s.id for s in samples]})
        trl_lengths: set[int] = set()

        def answer_reward(completions, completion_ids, sid, **_):
            trl_lengths.update(len(c) for c in completion_ids)
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [zoomqa.check(t, by_id[i]) for t, i in zip(texts, sid)]

        class StepClock(TrainerCallback):
            def __init__(self) -> None:
                self.ends: list[float] = []

            def on_step_end(self, *a, **k):
                self.ends.append(time.perf_counter())

        clock = StepClock()
        targs = GRPOConfig(
            output_dir=str(tmp / "trl"), per_device_train_batch_size=B * G,
            gradient_accumulation_steps=1, num_generations=G, max_completion_length=L,
            num_iterations=1, learning_rate=args.lr, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.0, loss_type="grpo",
            scale_rewards="group", epsilon=0.2, temperature=1.0, top_p=1.0, use_vllm=False,
            use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            shuffle_dataset=False, report_to="none", logging_strategy="no", save_strategy="no",
            disable_tqdm=True, log_completions=False, dataloader_num_workers=0, seed=0,
            max_steps=1)
        trainer = GRPOTrainer(model=model, reward_funcs=answer_reward, args=targs,
                              train_dataset=dataset, processing_class=processor,
                              callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # logging is off; no end-of-train summary

        def trl_steps(n: int) -> list[float]:
            """n+1 TRL steps in one train() call; the n step-end-to-step-end intervals."""
            clock.ends.clear()
            trainer.args.max_steps = n + 1
            trainer.train()
            return [b - a for a, b in zip(clock.ends, clock.ends[1:])]

        def vlm_steps(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                online_step(run, cfg, None)
                out.append(time.perf_counter() - t0)
                run.step += 1
            return out

        # ------------------------------------------------------------ warm up, then time
        vlm_steps(args.warmup)
        trl_steps(args.warmup)
        assert trl_lengths == {L}, f"TRL lengths {trl_lengths}, want {L}"
        vlm_t: list[float] = []
        trl_t: list[float] = []
        for _ in range(args.rounds):
            vlm_t += vlm_steps(args.steps)
            trl_t += trl_steps(args.steps)
        assert trl_lengths == {L}, f"TRL lengths {trl_lengths}, want {L}"
        lengths = {sum(t.loss_mask) for t in sample_groups(run, cfg)[0]}
        assert lengths == {L}, f"vlmagent lengths {lengths}, want {L}"

    n = B * G
    v, t = statistics.median(vlm_t), statistics.median(trl_t)
    result = {
        "device": f"CPU: {cpu_name()} ({os.cpu_count()} logical cores visible, "
                  f"torch threads {torch.get_num_threads()})",
        "versions": {"torch": torch.__version__, "trl": trl.__version__},
        "prompts": B, "group_size": G, "completions_per_step": n, "new_tokens": L,
        "image": f"{args.size}x{args.size}", "prompt_tokens": len(vlm_prompts[0]),
        "timed_steps_each": len(vlm_t),
        "vlmagent_step_s": round(v, 4), "trl_step_s": round(t, 4),
        "vlmagent_samples_per_s": round(n / v, 3), "trl_samples_per_s": round(n / t, 3),
        "ratio": round(t / v, 3),
        "vlmagent_step_s_all": [round(x, 3) for x in vlm_t],
        "trl_step_s_all": [round(x, 3) for x in trl_t],
    }
    print(json.dumps(result))
    print(f"one GRPO step, {B} prompts x {G} completions x {L} tokens, {args.size}px image, "
          f"on {result['device']}: vlmagent {n / v:.2f} samples/s vs TRL {n / t:.2f} samples/s "
          f"= {t / v:.2f}x (goal >= 1.2x)")


if __name__ == "__main__":
    main()

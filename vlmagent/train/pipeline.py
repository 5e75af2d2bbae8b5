"""The staged pipeline: stages in order, each starting from the previous one's weights.

    OUTPUT/<stage>/final/          HF-style export (adapters or full weights, safetensors)
    OUTPUT/<stage>/eval.json       accuracy / reward / tool_call_rate per domain seen so far
                                   (webgen: + functional_success_rate, valid_render_ratio, ...)
    OUTPUT/<stage>/responses-<scaffold>.jsonl   webgen: the held-out answers, for `vlmagent score`
    OUTPUT/<stage>/reward_cache-*.jsonl         webgen online: scored projects (a resume reuses)
    OUTPUT/<stage>/metrics.jsonl   one line per logged step
    OUTPUT/<stage>/checkpoints/    resumable state every checkpoint_every steps

A rerun skips finished stages (loading their weights) and resumes an interrupted one from its
last complete checkpoint; with the same seed it ends with the same weights as a run that was
never interrupted.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vlmagent.config import Config, resolve_stage, stage_config, to_dict
from vlmagent.train.common import StageRun, full_weights, make_accelerator, trainable_state
from vlmagent.train.evaluate import evaluate, probe

DONE = "DONE"


def resolve_stages(cfg: Config) -> list[Any]:
    """The config's stages with defaults filled in; a stage list that cannot run (none, an
    unknown kind or domain, two stages with one name) fails here, before any model loads."""
    from vlmagent.domains import DOMAINS
    from vlmagent.train import TRAIN_KINDS

    stages = [resolve_stage(cfg.train.defaults, s) for s in cfg.train.stages]
    if not stages:
        raise ValueError("train.stages is empty: list at least one stage")
    names = [s.name for s in stages]
    for s in stages:
        if s.kind not in TRAIN_KINDS:
            raise ValueError(f"stage {s.name}: unknown kind {s.kind!r} "
                             f"(valid: {', '.join(TRAIN_KINDS)})")
        if s.domain not in DOMAINS:
            raise ValueError(f"stage {s.name}: unknown domain {s.domain!r} "
                             f"(valid: {', '.join(DOMAINS)})")
        if s.kind == "gspo" and s.kl_coef:
            raise ValueError(f"stage {s.name}: gspo has no KL term, so kl_coef={s.kl_coef} would "
                             "be ignored: set kl_coef: 0 for it, or use kind: grpo")
        if s.until and s.kind == "warmup":
            raise ValueError(f"stage {s.name}: a warm-up trains perception heads, not answers, "
                             "so an answer-accuracy probe (until) cannot end it")
        if names.count(s.name) > 1:
            raise ValueError(f"two stages are named {s.name!r}: give each a unique `name`")
        stage_config(cfg, s)  # its agent settings: an unknown key fails before any model loads
    return stages


def run(cfg: Config, policy: Any = None) -> dict[str, Any]:
    """Run every stage in order; returns {stage: eval results}."""
    from vlmagent.policy import Policy
    from vlmagent.train import PREPARE, TRAIN_KINDS

    stages = resolve_stages(cfg)
    out = Path(cfg.train.output_dir)
    acc = make_accelerator(out)
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    policy = policy or Policy.from_config(cfg.policy)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    acc.init_trackers("vlmagent")
    seen: list[str] = []
    results: dict[str, Any] = {}
    base = cfg
    for st in stages:
        cfg = stage_config(base, st)  # the stage's own agent settings, if any
        if st.domain not in seen:
            seen.append(st.domain)
        sdir = out / st.name
        final = sdir / "final"
        if (final / DONE).exists():  # finished before: take its weights and move on
            _load_weights(policy, final / "trainable.safetensors")
            results[st.name] = json.loads((sdir / "eval.json").read_text())
            acc.print(f"[{st.name}] finished earlier; skipped")
            continue
        sdir.mkdir(parents=True, exist_ok=True)
        step_fn, load_data = TRAIN_KINDS[st.kind]
        data = load_data(st)
        if st.kind in PREPARE:
            PREPARE[st.kind](st, policy)
        r = StageRun(st, policy, acc, sdir, cfg.train.seed)
        if r.resume():
            acc.print(f"[{st.name}] resumed at step {r.step}")
        bar = tqdm(total=st.steps, initial=r.step, desc=st.name, unit="step",
                   disable=not acc.is_main_process)
        metrics: dict[str, float] = {}
        reached = bool(st.until) and r.step == 0 and _probe_reached(cfg, policy, st, acc, metrics)
        if reached:  # already there before the first step: the stage has nothing to do
            r.log(metrics)
        try:
            while r.step < st.steps and not reached:
                metrics = step_fn(r, cfg, data)
                r.step += 1
                bar.update(1)
                if st.until and r.step % st.probe_every == 0:
                    reached = _probe_reached(cfg, policy, st, acc, metrics)
                if r.step % cfg.train.log_every == 0 or r.step == st.steps or reached:
                    r.log(metrics)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()
                                     if k in ("loss", "reward", "accuracy", "probe_accuracy")})
                if st.checkpoint_every and r.step % st.checkpoint_every == 0 and r.step < st.steps:
                    r.save()
        finally:  # reward workers and their browsers go even when a step raised
            bar.close()
            r.close()
        if reached:
            acc.print(f"[{st.name}] probe accuracy {metrics['probe_accuracy']:.3f} >= "
                      f"{st.until} at step {r.step} of {st.steps}: stage done")
        # each rank evaluates its share of the held-out batches (rank 0 writes the samples
        # first, the others read them); the scores are gathered on every rank
        results[st.name] = evaluate(cfg, policy, seen, st.eval_n, st,
                                    out_dir=sdir if acc.is_main_process else None, acc=acc)
        for per_domain in results[st.name].values():
            per_domain["steps"] = r.step  # the steps this stage ran (fewer if it hit `until`)
        final.mkdir(parents=True, exist_ok=True)
        # Every rank records a digest of its weights: ranks that drifted apart are visible.
        (final / f"rank{acc.process_index}.sha256").write_text(weights_digest(policy))
        if acc.is_main_process:
            policy.save_pretrained(final)
            save_file(trainable_state(policy), str(final / "trainable.safetensors"))
            (sdir / "eval.json").write_text(json.dumps(results[st.name], indent=1))
            (final / DONE).write_text(st.name)
        acc.wait_for_everyone()
        acc.print(f"[{st.name}] eval: {json.dumps(results[st.name])}")
    acc.end_training()
    acc.print(curve(results))
    return results


def _probe_reached(cfg: Config, policy: Any, st: Any, acc: Any, metrics: dict[str, float]
                   ) -> bool:
    """Probe the stage (into `metrics`): has it reached `until`? Every rank probes the same
    weights greedily, so every rank gets the same answer and stops at the same step."""
    # rank 0 writes the probe samples, the others read them; FSDP: on whole (gathered) weights
    with full_weights(policy), acc.main_process_first():
        metrics["probe_accuracy"] = probe(cfg, policy, st)
    return metrics["probe_accuracy"] >= st.until


def curve(results: dict[str, Any]) -> str:
    """Held-out numbers after each stage, one row per (stage, domain): the learning curve."""
    rows = [f"{'stage':<12} {'domain':<10} {'accuracy':>8} {'reward':>8} {'tool use':>8}"]
    for stage, per_domain in results.items():
        for dom, r in per_domain.items():
            rows.append(f"{stage:<12} {dom:<10} {r['accuracy']:>8.3f} {r['reward']:>8.3f} "
                        f"{r['tool_call_rate']:>8.2f}")
    return "\n".join(rows)


def _load_weights(policy: Any, path: Path) -> None:
    state = load_file(str(path))
    res = policy.model.load_state_dict(state, strict=False)
    if res.unexpected_keys:
        raise RuntimeError(f"{path} does not fit the policy: {res.unexpected_keys[:3]}")


def weights_digest(policy: Any) -> str:
    """sha256 over the trainable parameters' raw bytes, in name order (as bytes, so bf16 and
    other dtypes numpy lacks hash too)."""
    h = hashlib.sha256()
    for name, p in sorted(policy.model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

"""`vlmagent router eval`: the same held-out episodes under every way of choosing resolution.

    fixed_full    every image at level 0 (no router)
    fixed_low     every image at the lowest level
    heuristic     image statistics (router/__init__.py)
    learned       the ViCO-trained head (agent.router.path, or OUTPUT/<router stage>/router)
    self_routing  episodes start at the lowest level; the policy may call `full_resolution`

Routed settings answer directly (text mode, no tools): the router alone decides what the
policy sees. They run the weights the learned head was trained on (its features are that
policy's vision features); self-routing runs the last stage's weights.

Per setting: `visual_tokens` (image pad tokens per episode, tool images included), `reward`
(the episode reward with train.defaults' terms), `accuracy`, `tokens_per_s` (policy tokens
generated per second of rollout wall time: fewer visual tokens make a faster prefill), `n`;
plus `levels` (the share of images at each level), `seconds`, accuracy per kind, and
`token_ratio` / `reward_ratio` against fixed_full.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmagent import agent
from vlmagent.config import Config
from vlmagent.domains import get_domain
from vlmagent.rewards.episode import FULL_RES_TOOL, RewardTerms, score_episodes, summary
from vlmagent.train.data import EVAL_SEED, samples

SETTINGS = ("fixed_full", "fixed_low", "heuristic", "learned", "self_routing")


def setting_config(cfg: Config, name: str) -> Config:
    """The agent config of one setting."""
    r, a = cfg.agent.router, cfg.agent
    low = len(r.levels) - 1
    direct = {"force_mode": "text", "tools": []}
    agents = {
        "fixed_full": replace(a, router=replace(r, kind="fixed", fixed_level=0), **direct),
        "fixed_low": replace(a, router=replace(r, kind="fixed", fixed_level=low), **direct),
        "heuristic": replace(a, router=replace(r, kind="heuristic"), **direct),
        "learned": replace(a, router=replace(r, kind="learned"), **direct),
        "self_routing": replace(a, router=replace(r, kind="fixed", fixed_level=low),
                                tools=[FULL_RES_TOOL], force_mode="none"),
    }
    return replace(cfg, agent=agents[name])


def visual_tokens(policy: Any, traj: Any) -> int:
    return sum(policy.tokens_per_image(im.size) for im in traj.images)


def run_setting(cfg: Config, policy: Any, held: list[Any], batch: int = 16) -> dict[str, float]:
    domain = get_domain(cfg.domain.name)
    t0 = time.perf_counter()
    trajs = []
    for i in range(0, len(held), batch):
        trajs += agent.rollout(policy, held[i:i + batch], cfg.agent)
    seconds = time.perf_counter() - t0
    scores = score_episodes(trajs, held, RewardTerms.from_config(cfg), domain)
    m = summary(trajs, scores)
    n = len(trajs)
    generated = sum(sum(t.loss_mask) for t in trajs)
    levels = [lv for t in trajs for lv in t.image_levels]
    share = {str(k): levels.count(k) / max(1, len(levels))
             for k in range(len(cfg.agent.router.levels))}
    return {"visual_tokens": sum(visual_tokens(policy, t) for t in trajs) / n,
            "reward": m["reward"], "accuracy": m["accuracy"],
            "tokens_per_s": generated / seconds, "n": n, "seconds": round(seconds, 2),
            "levels": share, "tool_call_rate": m["tool_call_rate"],
            **{k: v for k, v in domain.eval_metrics(held, [s.accuracy for s in scores]).items()
               if k.startswith("accuracy/")}}


def router_eval(cfg: Config, policy: Any, n: int, out: str | Path,
                settings: tuple[str, ...] = SETTINGS, temperature: float = 0.0,
                routed_policy: Any = None) -> dict[str, dict[str, float]]:
    """Every setting on the same n held-out samples (greedy unless `temperature`, as the
    pipeline's held-out eval); writes the report JSON to `out`. `routed_policy` (default
    `policy`) runs the fixed, heuristic and learned settings, `policy` self-routing."""
    cfg = replace(cfg, agent=replace(cfg.agent, temperature=temperature))
    routed_policy = routed_policy or policy
    held = samples(cfg, policy, cfg.domain.name, n, EVAL_SEED + cfg.train.seed)
    report: dict[str, Any] = {}
    for p in {id(policy): policy, id(routed_policy): routed_policy}.values():
        # one untimed batch first: the first passes pay one-off costs (allocator, kernels)
        agent.rollout(p, held[:4], setting_config(cfg, "fixed_full").agent)
    for name in settings:
        p = policy if name == "self_routing" else routed_policy
        report[name] = run_setting(setting_config(cfg, name), p, held)
        print(f"[router eval] {name}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in report[name].items() if isinstance(v, float)), flush=True)
    full = report.get("fixed_full")
    if full:
        for r in report.values():  # relative to fixed-full: the claim the router makes
            r["token_ratio"] = r["visual_tokens"] / max(1e-9, full["visual_tokens"])
            r["reward_ratio"] = r["reward"] / full["reward"] if full["reward"] else 0.0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1))
    return report


def trained_paths(cfg: Config) -> tuple[str, str | None, str | None]:
    """(the policy for self-routing, the learned router's head, the policy for the routed
    settings) of a trained cascade. Self-routing runs the last stage's weights. A learned head
    reads its policy's vision features, so the routed settings run the weights of the stage
    that trained the head (the last `router` stage); config values win where set."""
    out = Path(cfg.train.output_dir)
    done = [s.name for s in cfg.train.stages
            if s.name and (out / s.name / "final" / "config.json").exists()]
    last = str(out / done[-1] / "final") if done else cfg.policy.path
    routers = [s.name for s in cfg.train.stages
               if (s.kind or cfg.train.defaults.kind) == "router" and s.name in done]
    if cfg.agent.router.path:
        return last, cfg.agent.router.path, last
    if not routers:
        return last, None, last
    return last, str(out / routers[-1] / "router"), str(out / routers[-1] / "final")

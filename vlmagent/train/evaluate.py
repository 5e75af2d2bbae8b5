"""Held-out evaluation after every stage, on every domain seen so far (forgetting shows)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from vlmagent import agent
from vlmagent.config import Config, StageConfig
from vlmagent.domains import get_domain
from vlmagent.rewards.episode import RewardTerms, record, score_episodes, summary
from vlmagent.train.data import EVAL_SEED, PROBE_SEED, samples


def evaluate(cfg: Config, policy: Any, domains: list[str], n: int,
             stage: StageConfig | None = None, batch: int = 16, seed: int = EVAL_SEED
             ) -> dict[str, dict[str, float]]:
    """Greedy rollouts on n held-out samples per domain: accuracy (the domain's check of the
    final answer), reward (the episode reward with the terms of `stage`, or of train.defaults),
    tool-call rate, plus the domain's own metrics."""
    terms = RewardTerms.from_stage(stage) if stage is not None else RewardTerms.from_config(cfg)
    greedy = replace(cfg.agent, temperature=0.0)
    out = {}
    for name in domains:
        domain = get_domain(name)
        held = samples(cfg, policy, name, n, seed + cfg.train.seed)
        trajs = []
        for i in range(0, len(held), batch):
            trajs += agent.rollout(policy, held[i:i + batch], greedy)
        scores = score_episodes(trajs, held, terms, domain)
        record(trajs, scores)
        out[name] = {**summary(trajs, scores), "n": len(trajs),
                     **domain.eval_metrics(held, [r.accuracy for r in scores])}
    return out


def probe(cfg: Config, policy: Any, stage: StageConfig) -> float:
    """Greedy accuracy on the stage's probe samples (`probe_n` of its domain, from a seed range
    of their own: a stage that stops on the probe never sees the numbers it is judged by)."""
    res = evaluate(cfg, policy, [stage.domain], stage.probe_n, stage, seed=PROBE_SEED)
    return res[stage.domain]["accuracy"]

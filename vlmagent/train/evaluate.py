"""Held-out evaluation after every stage, on every domain seen so far (forgetting shows)."""
from __future__ import annotations

from typing import Any

from vlmagent import agent
from vlmagent.config import Config
from vlmagent.domains import get_domain
from vlmagent.train.data import EVAL_SEED, samples


def evaluate(cfg: Config, policy: Any, domains: list[str], n: int, batch: int = 16
             ) -> dict[str, dict[str, float]]:
    """Greedy rollouts on n held-out samples per domain: accuracy, reward, tool-call rate."""
    out = {}
    greedy = type(cfg.agent)(**{**cfg.agent.__dict__, "temperature": 0.0})
    for name in domains:
        mod = get_domain(name)
        held = samples(cfg, policy, name, n, EVAL_SEED + cfg.train.seed)
        trajs = []
        for i in range(0, len(held), batch):
            trajs += agent.rollout(policy, held[i:i + batch], greedy)
        acc = [mod.check(t.turns[-1].text, s) for t, s in zip(trajs, held)]
        out[name] = {"accuracy": sum(acc) / len(acc), "reward": sum(acc) / len(acc),
                     "tool_call_rate": sum(t.n_tool_calls > 0 for t in trajs) / len(trajs),
                     "n": len(trajs)}
    return out

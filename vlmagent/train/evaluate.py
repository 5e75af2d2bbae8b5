"""Held-out evaluation after every stage, on every domain seen so far (forgetting shows)."""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmagent import agent
from vlmagent.config import Config, StageConfig
from vlmagent.domains import get_domain
from vlmagent.rewards.episode import RewardTerms, final_text, record, score_episodes, summary
from vlmagent.train.data import EVAL_SEED, PROBE_SEED, samples


def evaluate(cfg: Config, policy: Any, domains: list[str], n: int,
             stage: StageConfig | None = None, batch: int = 16, seed: int = EVAL_SEED,
             out_dir: str | Path | None = None, acc: Any = None) -> dict[str, dict[str, float]]:
    """Rollouts on n held-out samples per domain: accuracy (the domain's check of the final
    answer), reward (the episode reward with the terms of `stage`, or of train.defaults),
    tool-call rate, plus the domain's own metrics. Greedy, unless the stage sets
    eval_temperature (then sampled, from a fixed seed: every stage sees the same draws).

    A domain with a batch reward (webgen) is scored on a reward pool while later batches
    generate; with out_dir its answers are written as responses-<scaffold>.jsonl there, the
    input of `vlmagent score --from-responses`.

    With `acc` (several ranks): rank 0 writes the held-out samples first, then every rank rolls
    out its share of the batches and the scores are gathered: the numbers of one process (the
    same batches, seeds and order), in 1/ranks of the time. (A batch-scored domain, webgen,
    keeps one reward pool per rank and evaluates the whole set on each.)"""
    terms = RewardTerms.from_stage(stage) if stage is not None else RewardTerms.from_config(cfg)
    temp = float(stage.eval_temperature or 0.0) if stage is not None else 0.0
    acfg = replace(cfg.agent, temperature=temp)
    out = {}
    for name in domains:
        domain = get_domain(name)
        with acc.main_process_first() if acc is not None else contextlib.nullcontext():
            held = samples(cfg, policy, name, n, seed + cfg.train.seed)
        if acc is not None and acc.num_processes > 1 and not hasattr(domain, "score_answers"):
            trajs, scores = _sharded(acc, policy, domain, held, acfg, batch, terms,
                                     seed + cfg.train.seed if temp else None)
        else:  # (under several ranks: one after the other, as before sharding existed)
            with acc.main_process_first() if acc is not None else contextlib.nullcontext():
                trajs, answers = _rollouts(cfg, policy, domain, held, acfg, batch,
                                           seed + cfg.train.seed if temp else None, out_dir)
            scores = score_episodes(trajs, held, terms, domain, answers=answers)
            record(trajs, scores)
        details = [r.terms[0].details for r in scores]
        out[name] = {**summary(trajs, scores), "n": len(trajs),
                     **domain.eval_metrics(held, [r.accuracy for r in scores], details)}
    return out


def _sharded(acc: Any, policy: Any, domain: Any, held: list[Any], acfg: Any, batch: int,
             terms: RewardTerms, seed: int | None) -> tuple[list[Any], list[Any]]:
    """This rank's batches (every k-th, each as one process would run it), scored, gathered
    back into the order of `held` on every rank (episodes without their images)."""
    from accelerate.utils import gather_object

    starts = list(range(0, len(held), batch))[acc.process_index::acc.num_processes]
    mine: list[tuple[int, Any, Any]] = []
    for s in starts:
        part = held[s:s + batch]
        trajs = agent.rollout(policy, part, acfg, seed=None if seed is None else seed + s)
        scores = score_episodes(trajs, part, terms, domain)
        record(trajs, scores)
        mine += [(s + j, replace(t, images=[], turns=[]), r)
                 for j, (t, r) in enumerate(zip(trajs, scores))]
    every = sorted(gather_object(mine), key=lambda x: x[0])
    return [t for _, t, _ in every], [r for _, _, r in every]


def _rollouts(cfg: Config, policy: Any, domain: Any, held: list[Any], acfg: Any, batch: int,
              seed: int | None, out_dir: str | Path | None) -> tuple[list[Any], Any]:
    """The held-out episodes, in batches; a batch-scored domain's answers are scored while the
    next batches generate (its answer terms are returned too, else None)."""
    from vlmagent.rewards.web import AnswerBatch, WebReward

    scored = hasattr(domain, "score_answers")
    trajs: list[Any] = []
    with contextlib.ExitStack() as stack:
        web = None
        if scored:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="eval-web-"))
            web = AnswerBatch(stack.enter_context(WebReward(cfg, tmp)), held)
        for i in range(0, len(held), batch):
            trajs += agent.rollout(policy, held[i:i + batch], acfg,
                                   seed=None if seed is None else seed + i,
                                   on_done=web.on_done(i) if web else None)
        if web is None:
            return trajs, None
        texts = [final_text(t) for t in trajs]
        answers = web.answers(texts)
    if out_dir is not None:
        domain.responses_jsonl(held, texts, Path(out_dir) / "responses.jsonl")
    return trajs, answers


def probe(cfg: Config, policy: Any, stage: StageConfig) -> float:
    """Accuracy on the stage's probe samples (`probe_n` of its domain, from a seed range of
    their own: a stage that stops on the probe never sees the numbers it is judged by)."""
    res = evaluate(cfg, policy, [stage.domain], stage.probe_n, stage, seed=PROBE_SEED)
    return res[stage.domain]["accuracy"]

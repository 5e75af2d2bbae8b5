"""The reward of a model response that writes a website: parse and materialise it (web/webgen.py),
then run the website cascade on the project folder.

A response that cannot become a project is never an exception: it scores as a failed structure
stage carrying the reason (`rejected`). Locked scaffold files that the model also wrote were
ignored by the materialiser; the structure stage's details record them (`note_ignored`). The batch
scorer (`vlmagent score --from-responses`, scoring/responses.py) does the same per job in worker
processes; `score_response` is the in-process form (training, tests).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmagent.config import WebgenConfig
from vlmagent.rewards.cascade import Cascade, SiteContext, compose
from vlmagent.types import RewardResult, StageScore
from vlmagent.web import webgen
from vlmagent.web.scaffold import Scaffold


def rejected(prep: webgen.Prepared, text: Any, n_stages: int,
             weights: dict[str, float]) -> RewardResult:
    """The reward of a response that did not become a project (prep.root is None): its
    structure failure, composed as by a cascade of n_stages stages."""
    stages = [webgen.rejection_stage(prep)]
    return RewardResult(compose(stages, n_stages, weights), stages, webgen.response_hash(text))


def note_ignored(stages: Sequence[StageScore | dict[str, Any]],
                 ignored: list[dict[str, str]]) -> None:
    """Record in the structure stage's details (StageScore or its dict) the locked files the
    model also wrote, whose scaffold version was used."""
    if not ignored or not stages:
        return
    first = stages[0]
    name, details = ((first["name"], first["details"]) if isinstance(first, dict)
                     else (first.name, first.details))
    if name == "structure":
        details["ignored_files"] = ignored


def score_response(text: Any, scaffold: Scaffold, cascade: Cascade, workdir: str | Path,
                   limits: WebgenConfig) -> RewardResult:
    """In-process reward of one response: parse, materialise, cascade.

    workdir gets project/ (the files) and artifacts/ (build output, screenshots)."""
    prep = webgen.prepare(text, scaffold, Path(workdir) / "project", limits)
    if prep.problem is not None or prep.root is None:
        return rejected(prep, text, len(cascade.stages), cascade.weights)
    result = cascade(SiteContext.from_dir(prep.root, artifacts=Path(workdir) / "artifacts"))
    note_ignored(result.stages, prep.ignored)
    return result

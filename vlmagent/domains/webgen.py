"""Web generation (WebGen-R1): write a whole website project from a request, in one answer.

Samples are the project's written requests (web/briefs.py, data/webgen/prompts.jsonl: 9
categories, each request with the scaffold it targets and a train / held-out split). A sample's
kind is its scaffold (`static` or `vite-react`). The answer is the project as fenced code blocks
with paths (web/webgen.py), and its answer term is the website cascade's reward, the one
`vlmagent score --from-responses` gives (rewards/web.py): structure -> build (vite-react) ->
execution in Chromium -> aesthetics. The reported accuracy is functional success.

Seeds: train/data.py draws held-out evaluation and probe samples from seeds >= 1_000_003
(EVAL_SEED); this domain serves every seed >= HELDOUT_FROM from the held-out split, whose site
names never occur in a training request, and every other seed from the train split.

Thinking modes: text mode answers at once; tool mode drafts the page, renders it with
`render_html` (the screenshot comes back as an image turn), then writes the project.
"""
from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vlmagent.domains.common import check_kinds, load_samples, save_samples
from vlmagent.protocol import get_format
from vlmagent.rewards.episode import Answer
from vlmagent.types import Sample, ToolCall
from vlmagent.web import webgen
from vlmagent.web.briefs import load_prompts
from vlmagent.web.expert import expert_files, expert_response

DOMAIN = "webgen"
VERSION = 1  # bump when the same arguments draw different samples (the sample cache key)
KINDS = ("static", "vite-react")
HELDOUT_FROM = 1_000_000  # seeds from here on draw held-out requests (see the docstring)
EXPERTS = ("compact", "full")  # domain.options.expert: the page SFT learns (web/expert.py)

__all__ = ["DOMAIN", "HELDOUT_FROM", "KINDS", "VERSION", "check", "eval_metrics",
           "expert_turns", "load_samples", "make_samples", "save_samples", "score_answers",
           "seen_box"]


def prompt_text(rec: dict[str, Any], instructions: bool = True) -> str:
    """The user turn: the request, then how to write the answer for its scaffold (left out for
    tiny models that learn the format from the experts: 190 fewer tokens per episode)."""
    if not instructions:
        return rec["prompt"]
    return f"{rec['prompt']}\n\n{webgen.instructions(webgen.load_scaffold(rec['scaffold']))}"


def make_samples(n: int, seed: int, out_dir: str | Path, kinds: Sequence[str] = ("static",),
                 size: tuple[int, int] | None = None,
                 seen_size: Callable[[int, int], tuple[int, int]] | None = None,
                 expert: str = "full", instructions: bool = True) -> list[Sample]:
    """n requests of the scaffolds in `kinds`, drawn without repeats while the split lasts
    (train split below HELDOUT_FROM, held-out from there); out_dir is made (no images).
    Options (domain.options): `expert`, compact pages for tiny models or full ones;
    `instructions`, whether the prompt says how to format the answer (prompt_text)."""
    check_kinds(DOMAIN, kinds, KINDS)
    if expert not in EXPERTS:
        raise ValueError(f"domain.options.expert: {expert!r} (valid: {', '.join(EXPERTS)})")
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # the caller writes samples.jsonl there
    split = "heldout" if seed >= HELDOUT_FROM else "train"
    pool = load_prompts(split=split, scaffolds=list(kinds))
    if not pool:
        raise ValueError(f"no {split} webgen requests for scaffolds {list(kinds)}")
    rng = random.Random(seed)
    order: list[dict[str, Any]] = []
    while len(order) < n:  # a full shuffle per pass: repeats only once the split is used up
        order += rng.sample(pool, len(pool))
    out = []
    for i, rec in enumerate(order[:n]):
        rep = i // len(pool)
        out.append(Sample(id=rec["id"] + (f"~{rep}" if rep else ""),
                          prompt=prompt_text(rec, instructions),
                          domain=DOMAIN, meta={"kind": rec["scaffold"], "scaffold": rec["scaffold"],
                                               "category": rec["category"], "split": split,
                                               "expert": expert, "record": rec}))
    return out


def _record(sample: Sample) -> dict[str, Any]:
    return sample.meta["record"]


def expert_turns(sample: Sample, mode: str, seen_size_fn: Callable[[int, int], tuple[int, int]],
                 fmt: str = "hermes") -> list[str]:
    """text mode: the project at once; tool mode: render the index page's draft (its CSS
    inlined, since an HTML string has no folder to load style.css from), then the project."""
    rec = _record(sample)
    compact = sample.meta.get("expert") == "compact"
    answer = expert_response(rec, compact=compact)
    if mode == "text":
        return [f"<think_no_tools></think_no_tools>\n{answer}"]
    if mode != "tool":
        raise ValueError(f"unknown mode {mode!r} (valid: tool, text)")
    call = get_format(fmt).render_call(ToolCall("render_html",
                                                {"html": draft_html(rec, compact)}))
    return [f"<think_with_tools>Draft the page and look at it.{call}",
            f"</think_with_tools>\n{answer}"]


def draft_html(rec: dict[str, Any], compact: bool = False) -> str:
    """One self-contained HTML page to look at before answering: the static expert's index
    with its stylesheet inlined (for vite-react, the static page of the same request)."""
    files = expert_files({**rec, "scaffold": "static"}, compact=compact)
    html = files["index.html"]
    css = files.get("style.css", "")
    link = '<link rel="stylesheet" href="style.css">'
    return html.replace(link, f"<style>{css}</style>") if link in html else html


def seen_box(sample: Sample, seen_size: Callable[[int, int], tuple[int, int]]) -> list[int]:
    """No region to look at: the request has no image."""
    return []


# ---------------------------------------------------------------- reward
def score_answers(texts: Sequence[str], samples: Sequence[Sample], cfg: Any = None,
                  workdir: str | Path | None = None) -> list[Answer]:
    """The cascade reward of each final answer, scored together on a RewardPool (the rollout
    CLI, the debugger). Evaluation and online RL submit while generating (rewards/web.py
    AnswerBatch) and pass the answers to score_episodes instead."""
    from vlmagent.config import Config
    from vlmagent.rewards.web import AnswerBatch, WebReward

    with tempfile.TemporaryDirectory(prefix="webgen-") as tmp:
        with WebReward(cfg or Config(), workdir or tmp) as web:
            return AnswerBatch(web, samples).answers(texts)


def check(answer_text: str, sample: Sample) -> float:
    """The cascade reward of one answer, default config (prefer score_answers for many)."""
    return score_answers([answer_text], [sample])[0].value


def eval_metrics(samples: Sequence[Sample], accuracy: Sequence[float],
                 details: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
    """WebGen-R1's held-out numbers (rewards/web.py summarize) and functional success per
    category, from the answer terms' details."""
    from vlmagent.rewards.web import WebScore, summarize

    if not details:
        return {}
    scores = [WebScore(d["cascade"]["reward"], d["cascade"], d["web"]) for d in details]
    out = summarize(scores, [s.meta["scaffold"] for s in samples])
    by_cat: dict[str, list[float]] = {}
    for s, a in zip(samples, accuracy, strict=True):
        by_cat.setdefault(s.meta["category"], []).append(a)
    out.update({f"functional/{k}": sum(v) / len(v) for k, v in sorted(by_cat.items())})
    return out


def responses_jsonl(samples: Sequence[Sample], texts: Sequence[str], path: str | Path) -> None:
    """Held-out answers as `vlmagent score --from-responses` reads them (one file per scaffold:
    path's stem + '-<scaffold>'), so the batch scorer can re-score an evaluation."""
    path = Path(path)
    by: dict[str, list[str]] = {}
    for i, (s, t) in enumerate(zip(samples, texts, strict=True)):
        by.setdefault(s.meta["scaffold"], []).append(
            json.dumps({"id": f"{i:04d}-{s.id}", "text": t}))
    for scaffold, lines in by.items():
        (path.parent / f"{path.stem}-{scaffold}{path.suffix}").write_text("\n".join(lines) + "\n")

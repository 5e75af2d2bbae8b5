"""Helpers the synthetic look-closer domains share (zoomqa, zoomgrid): the closed-set answer
check, sample files, the target box in the seen frame, and per-kind held-out accuracy."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from vlmagent.protocol import parse_answer
from vlmagent.tools.image import to_seen
from vlmagent.types import Sample


def normalize(text: str) -> str:
    """Lower case, no surrounding space, quotes or final punctuation; 'colour' words as-is."""
    return text.strip().strip("\"'`").rstrip(".!").strip().lower()


def check(answer_text: str, sample: Sample) -> float:
    """1.0 when the <answer> (or, without one, the whole text) matches after normalisation."""
    got = parse_answer(answer_text)
    got = answer_text if got is None else got
    return float(normalize(got) == normalize(str(sample.answer)))


def check_kinds(domain: str, kinds: Sequence[str], valid: Sequence[str]) -> None:
    """Fail on an empty or unknown kind list, naming the valid kinds."""
    bad = [k for k in kinds if k not in valid]
    if bad or not kinds:
        raise ValueError(f"unknown {domain} kind {bad[0] if bad else None!r} "
                         f"(valid: {', '.join(valid)})")


def seen_box(sample: Sample, seen_size: Callable[[int, int], tuple[int, int]]) -> list[int]:
    """The sample's target box (meta "box", original pixels) in the frame of the image as the
    model sees it, rounded outwards."""
    w, h = sample.meta["size"]
    return list(to_seen(sample.meta["box"], (w, h), tuple(seen_size(w, h))))


def eval_metrics(samples: Sequence[Sample], accuracy: Sequence[float],
                 details: Sequence[dict] | None = None) -> dict[str, float]:
    """Held-out accuracy per question kind ("accuracy/<kind>"): which kinds are learnt.
    (`details`, the answer terms' details, carry nothing more for a closed-set check.)"""
    by_kind: dict[str, list[float]] = {}
    for s, a in zip(samples, accuracy, strict=True):
        by_kind.setdefault(str(s.meta.get("kind", "")), []).append(a)
    return {f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_kind.items())}


def save_samples(samples: Sequence[Sample], path: str | Path) -> None:
    """One JSON object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(asdict(s), ensure_ascii=False) + "\n")


def load_samples(path: str | Path) -> list[Sample]:
    with open(path, encoding="utf-8") as f:
        return [Sample(**json.loads(line)) for line in f if line.strip()]

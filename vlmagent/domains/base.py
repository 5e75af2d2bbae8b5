"""What a task domain provides: the `Domain` protocol (zoomqa, zoomgrid and webgen follow it;
driving will), and `PerceptionDomain` for domains that also feed the perception warm-up.

A domain whose answers are scored in batch (webgen: websites built and driven in a browser by
worker processes) adds `score_answers(texts, samples) -> list[Answer]` (rewards/episode.py)
and `responses_jsonl`; evaluation and online RL then score its episodes on a reward pool while
the policy generates (rewards/web.py AnswerBatch).

A domain is usually a module: its functions and constants satisfy the protocol structurally,
so the registry (domains/__init__.py) holds the modules themselves.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vlmagent.images import SeenSize  # (w, h) of an image -> the size the model sees
from vlmagent.types import Sample


@runtime_checkable
class Domain(Protocol):
    """Samples from a seed, the answer check (the episode reward's answer term), scripted
    expert turns for SFT, and per-domain evaluation numbers."""

    DOMAIN: str  # the registry name, also Sample.domain
    KINDS: tuple[str, ...]  # the question kinds make_samples accepts
    VERSION: int  # bump when the same arguments would draw different samples (cache key)

    def make_samples(self, n: int, seed: int, out_dir: str | Path,
                     kinds: Sequence[str] = ..., size: tuple[int, int] | None = None,
                     seen_size: SeenSize | None = None) -> list[Sample]:
        """n samples (images written under out_dir), the same for the same arguments."""
        ...

    def save_samples(self, samples: Sequence[Sample], path: str | Path) -> None: ...

    def load_samples(self, path: str | Path) -> list[Sample]: ...

    def check(self, answer_text: str, sample: Sample) -> float:
        """1.0 when the final assistant text answers the sample right, else 0.0."""
        ...

    def expert_turns(self, sample: Sample, mode: str, seen_size_fn: SeenSize,
                     fmt: str = "hermes") -> list[str]:
        """The scripted assistant turns of an expert episode in `mode` (tool | text)."""
        ...

    def seen_box(self, sample: Sample, seen_size: SeenSize) -> list[int]:
        """The region to look at, in the frame of the image as the model sees it."""
        ...

    def eval_metrics(self, samples: Sequence[Sample], accuracy: Sequence[float],
                     details: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        """Held-out numbers beyond accuracy/reward (e.g. accuracy per kind); details: each
        episode's answer-term details (webgen: the cascade's result line)."""
        ...


@runtime_checkable
class PerceptionDomain(Domain, Protocol):
    """A domain the perception warm-up (train/warmup.py) can train on: in-memory
    (overview, zoom, cell, label) examples with CELLS regions and ANSWERS classes."""

    CELLS: int
    ANSWERS: dict[str, list[str]]

    def perception_batch(self, n: int, seed: int, seen_size: SeenSize,
                         difficulty: float = 1.0) -> list[dict[str, Any]]: ...

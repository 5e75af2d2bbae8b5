"""Shared fixtures. Tiny models are built once per test session (each build trains a BPE
tokenizer and saves a model) and must be treated as read-only by the tests that use them."""
from __future__ import annotations

import os
from pathlib import Path

# One torch thread per process (inherited by the subprocesses tests start): the models here are
# tiny, run no slower on one thread, and the suite runs one pytest worker per core plus
# scoring workers and training ranks, which would otherwise oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory):
    """tiny_factory(family="qwen2_5_vl", seed=0, max_pixels=448*448, corpus="base") -> path of
    a tiny model (corpus "web": the tokenizer knows HTML, for webgen),
    built on first use and reused for the rest of the session."""
    from vlmagent.tiny import build_tiny

    built: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("tiny-models")

    def get(family: str = "qwen2_5_vl", seed: int = 0, max_pixels: int = 448 * 448,
            corpus: str = "base") -> Path:
        key = (family, seed, max_pixels, corpus)
        if key not in built:
            built[key] = build_tiny(root / f"{family}-s{seed}-p{max_pixels}-{corpus}",
                                    family=family, seed=seed, max_pixels=max_pixels,
                                    corpus=corpus)
        return built[key]

    return get


@pytest.fixture(scope="session")
def tiny(tiny_factory) -> Path:
    """The default tiny Qwen2.5-VL (seed 0, 448x448 pixel budget)."""
    return tiny_factory()


@pytest.fixture(scope="session")
def tiny_web(tiny_factory) -> Path:
    """The tiny Qwen2.5-VL whose tokenizer was trained with the web experts' pages too."""
    return tiny_factory(corpus="web")

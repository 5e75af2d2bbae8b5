"""The interactive tool-call debugger (`vlmagent debug`): a local page to step an episode.

session.py is the step logic (pure Python, tested directly), samples.py where its samples come
from, view.py turns it into JSON for the page, server.py serves the page and a small JSON API
(standard library only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .samples import DebugError, shipped_sample
from .session import Session

__all__ = ["DebugError", "Session", "open_session", "shipped_sample"]


def open_session(cfg: Any, policy: str = "manual") -> Session:
    """A session on the shipped sample. `policy`: a model folder/hub id, or "manual" (then
    cfg.policy.path, when it is an existing folder, supplies the tokenizer for exact tokens)."""
    session = Session(cfg)
    if policy != "manual":
        session.set_policy("model", policy)
    elif cfg.policy.path and Path(cfg.policy.path).is_dir():
        session.set_policy("manual", cfg.policy.path)
    session.load_shipped()
    return session

"""Scaffolds: the fixed project templates a model's website is written into.

A scaffold is a folder vlmagent/scaffolds/<name>/ (package data) with scaffold.json (description,
required files, whether it needs a build, the main file of a one-block answer) and its files.
Every shipped file is LOCKED: the parser (webgen.py) keeps the scaffold's version of it and the
build stage (rewards/build.py) refuses a project whose copy differs. This module imports nothing
from the rest of vlmagent, so both sides can use it.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

SCAFFOLD_ROOT = Path(__file__).resolve().parents[1] / "scaffolds"


@dataclass(frozen=True)
class Scaffold:
    name: str
    root: Path
    description: str
    required: list[str]
    build: bool
    locked: dict[str, bytes]  # relative path -> the scaffold's bytes
    lone_path: str = ""
    lone_languages: tuple[str, ...] = ()


def scaffold_names() -> list[str]:
    return sorted(p.parent.name for p in SCAFFOLD_ROOT.glob("*/scaffold.json"))


@functools.cache
def load_scaffold(name: str) -> Scaffold:
    """A shipped scaffold by name; an unknown name lists the valid ones (ValueError). Package
    data: read once per process and shared (frozen; its `locked` bytes are read, never
    changed), since prompts, parsing and reward summaries ask for it per item."""
    root = SCAFFOLD_ROOT / name
    if name not in scaffold_names():
        raise ValueError(f"unknown scaffold {name!r} (valid: {', '.join(scaffold_names())})")
    meta = json.loads((root / "scaffold.json").read_text())
    locked = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
              if p.is_file() and p.name != "scaffold.json" and "__pycache__" not in p.parts}
    lone = meta.get("lone_block", {})
    return Scaffold(name, root, meta["description"], list(meta["required"]), bool(meta["build"]),
                    locked, lone.get("path", ""), tuple(lone.get("languages", ())))

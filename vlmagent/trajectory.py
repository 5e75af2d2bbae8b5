"""Trajectories on disk: one JSON line per episode, the images it saw saved beside it as PNG.

PNG is lossless, so a loaded trajectory gives training the very pixels (at the very size) the
policy saw, and `context()` rebuilds the exact model input: same tokens, same images.

    traj.jsonl
    traj.images/<episode>/<k>.png      k = position of the image in the episode
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from vlmagent.types import ToolCall, Trajectory, Turn

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".images")


def to_record(traj: Trajectory, jsonl: str | Path) -> dict[str, Any]:
    """The JSON record of `traj`; writes its images under image_dir(jsonl)."""
    jsonl = Path(jsonl)
    folder = image_dir(jsonl) / _SAFE.sub("_", traj.id)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, im in enumerate(traj.images):
        f = folder / f"{k}.png"
        if isinstance(im, Image.Image):
            im.save(f, compress_level=1)
        files.append(f.relative_to(jsonl.parent).as_posix())
    rec = asdict(traj) | {"images": files}
    it = iter(files)
    for turn, d in zip(traj.turns, rec["turns"]):
        d["image_names"] = d.pop("images")
        d["images"] = [next(it) for _ in turn.images]  # this turn's files, in order
        d["span"] = list(turn.span)
    return rec


def save(trajs: list[Trajectory], path: str | Path, append: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for t in trajs:
            f.write(json.dumps(to_record(t, path)) + "\n")
            f.flush()


def from_record(rec: dict[str, Any], base: str | Path) -> Trajectory:
    base = Path(base)
    images = []
    for f in rec["images"]:
        with Image.open(base / f) as im:
            images.append(im.convert("RGB"))
    turns = []
    for d in rec["turns"]:
        call = d.get("tool_call")
        turns.append(Turn(d["role"], d["text"], list(d.get("image_names", [])),
                          ToolCall(**call) if call else None, d.get("error"),
                          tuple(d.get("span", (0, 0)))))
    fields = {k: v for k, v in rec.items() if k not in ("turns", "images")}
    return Trajectory(**fields, turns=turns, images=images)


def load(path: str | Path) -> list[Trajectory]:
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        return [from_record(json.loads(line), path.parent) for line in f if line.strip()]


def context(traj: Trajectory) -> Any:
    """The policy input that reproduces this episode exactly (for log-probs in training)."""
    from vlmagent.policy import Context

    return Context(list(traj.token_ids), list(traj.images), traj.id)

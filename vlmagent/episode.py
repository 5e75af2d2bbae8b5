"""One episode while it runs (agent.py's loop): its mutable state and the three things the
loop does to it: append tokens (with their loss mask and log-probs), show an image at the size
the model sees it, and close it (final answer, finish reason, mode match)."""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from vlmagent import protocol
from vlmagent.images import ImageCache, resize_seen
from vlmagent.policy import Context
from vlmagent.tools.base import ToolEnv
from vlmagent.types import Sample, Trajectory


@dataclass
class Episode:
    """Mutable state of one episode while it runs; `traj` is what comes out."""

    sample: Sample
    traj: Trajectory
    env: ToolEnv
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    logps: list[float] = field(default_factory=list)
    done: bool = False
    n_assistant: int = 0
    scripted: bool = False
    cache: ImageCache | None = None  # shares seen-size copies across a group and epochs

    def context(self) -> Context:
        return Context(self.traj.token_ids, self.traj.images, self.traj.id)


def append(e: Episode, ids: list[int], mask: int, logps: list[float] | None = None) -> None:
    e.traj.token_ids.extend(ids)
    e.traj.loss_mask.extend([mask] * len(ids))
    if mask:
        e.logps.extend(logps if logps else [0.0] * len(ids))


def seen_image(ep: Episode, name: str) -> Image.Image:
    """The image `name` at the size the model sees it (the env keeps the original)."""
    ref = ep.env.images[name]
    ep.seen[name] = ref.seen
    if ep.cache is not None:
        return ep.cache.seen(ref.image, ref.seen)
    return resize_seen(ref.image, ref.seen)


def finish(e: Episode, reason: str) -> None:
    """Close the episode; returns None so callers can `return finish(...)`."""
    e.done = True
    t = e.traj
    t.finish = reason
    last = next((x.text for x in reversed(t.turns) if x.role == "assistant"), "")
    t.answer = protocol.parse_final(last)
    if t.mode is None:
        t.mode_matched = False
    else:
        t.mode_matched = (t.mode == "tool") == (t.n_tool_calls > 0) and (
            t.forced_mode is None or t.forced_mode == t.mode)

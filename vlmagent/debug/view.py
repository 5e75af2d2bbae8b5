"""JSON views of a debugging session for the page: turns, images, tokens and the loss mask.

Images travel as URLs (/img/<content key>.png) rather than inline data, so a state update
stays small and an image the page already has is not sent again.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

from PIL import Image

from vlmagent.domains import DOMAINS, get_domain
from vlmagent.images import image_key
from vlmagent.protocol import ParseError
from vlmagent.types import ToolCall, Trajectory

from .session import Session

MAX_TOKENS_SHOWN = 50_000  # beyond this the token view is cut (a page of spans stays usable)


class ImageStore:
    """Images by content key, PNG-encoded on first request; least recently used out."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._items: OrderedDict[str, Image.Image | bytes] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, im: Image.Image) -> str:
        key = image_key(im)
        with self._lock:
            if key not in self._items:
                self._items[key] = im
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return key

    def png(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
        if item is None or isinstance(item, bytes):
            return item
        buf = io.BytesIO()
        item.save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
        with self._lock:
            if key in self._items:
                self._items[key] = data
        return data


def _tokens_per_image(s: Session, size: tuple[int, int]) -> int:
    try:
        return int(s.policy.tokens_per_image(size))
    except ValueError:  # a replayed image at a size this processor would resize: estimate
        f = s.policy.patch_factor
        return (size[0] // f) * (size[1] // f)


def _call(call: ToolCall | None) -> dict[str, Any] | None:
    return None if call is None else {"name": call.name, "arguments": call.arguments}


def episode_view(s: Session, traj: Trajectory, store: ImageStore, live: bool) -> dict[str, Any]:
    """Every turn with its text, call or parse error, images, span and policy-token count."""
    originals = {}
    if live and s.episode is not None:
        originals = {k: list(r.size) for k, r in s.episode.env.images.items()}
    sources = [e.source for e in s.entries] if live else \
        list(traj.meta.get("debug_sources", []))
    mask = traj.loss_mask
    images = iter(traj.images)
    levels = iter(traj.image_levels)  # the router's level per image (older files: none)
    turns, k = [], 0
    for i, t in enumerate(traj.turns):
        shown = []
        for name in t.images:
            im = next(images, None)
            if not isinstance(im, Image.Image):
                break
            shown.append({"name": name, "url": f"/img/{store.put(im)}.png", "seen": list(im.size),
                          "tokens": _tokens_per_image(s, im.size),
                          "level": next(levels, None), "original": originals.get(name)})
        a, b = t.span
        v: dict[str, Any] = {"index": i, "role": t.role, "text": t.text, "images": shown,
                             "error": t.error, "span": [a, b], "n_tokens": b - a,
                             "policy_tokens": sum(mask[a:b])}
        if t.role == "assistant":
            v["turn"] = k
            v["source"] = sources[k] if k < len(sources) else None
            v["call"] = _call(t.tool_call)
            if t.tool_call is None and t.text.rstrip().endswith(s.fmt.stop):
                parsed = s.fmt.parse(t.text)
                if isinstance(parsed, ParseError):
                    v["parse_error"] = parsed.message
            k += 1
        turns.append(v)
    out = {"id": traj.id, "turns": turns, "finish": traj.finish, "answer": traj.answer,
           "mode": traj.mode, "n_tool_calls": traj.n_tool_calls,
           "n_tool_errors": traj.n_tool_errors, "n_tokens": len(traj.token_ids),
           "n_policy_tokens": sum(mask), "reward": traj.reward,
           "tokens": token_segments(s, traj) if s.tokenized else None}
    return out


def token_segments(s: Session, traj: Trajectory) -> list[list[Any]] | None:
    """[text, mask, count, logp] per token (image pad runs collapsed into one segment).

    logp is the sampled log-prob of a policy token when the episode has them, else None."""
    ids, mask = traj.token_ids[:MAX_TOKENS_SHOWN], traj.loss_mask
    if not ids:
        return None
    pad = getattr(s.policy, "image_token_id", None)
    logps = iter(traj.logps or [])
    decoded: dict[int, str] = {}
    out: list[list[Any]] = []
    i = 0
    while i < len(ids):
        if ids[i] == pad:
            j = i
            while j < len(ids) and ids[j] == pad:
                j += 1
            out.append([f"<|image_pad|>\u00d7{j - i}", mask[i], j - i, None])
            i = j
            continue
        if ids[i] not in decoded:
            decoded[ids[i]] = s.policy.decode([ids[i]])
        lp = next(logps, None) if mask[i] and traj.logps else None
        out.append([decoded[ids[i]], mask[i], 1, None if lp is None else round(lp, 3)])
        i += 1
    return out


def suggestion(s: Session) -> str:
    """A ready-to-step assistant turn for the manual editor: a crop on the target (or the
    middle of the image), then a zoom into the crop, then an answer."""
    ep = s.episode
    if ep is None or ep.done or s.sample is None:
        return ""
    render = s.fmt.render_call
    calls = ep.traj.n_tool_calls
    if calls == 0 and "crop" in s.tools:
        name = next(iter(s.sample.images))
        box = _target_box(s) or _middle(ep.env.images[name].seen)
        return ("<think_with_tools>The marked region is too small to read; I crop it.\n"
                + render(ToolCall("crop", {"image": name, "bbox": box})))
    if calls == 1 and "zoom" in s.tools:
        name = next(reversed(ep.env.images))
        return ("The crop is still small; I zoom into its middle.\n"
                + render(ToolCall("zoom", {"image": name, "bbox": _middle(
                    ep.env.images[name].seen), "factor": 2})))
    return "</think_with_tools><answer>?</answer>"


def _middle(seen: tuple[int, int]) -> list[int]:
    w, h = seen
    return [w // 4, h // 4, w - w // 4, h - h // 4]


def _target_box(s: Session) -> list[int] | None:
    """The sample's target region in the seen frame (generated domains know it)."""
    sample = s.sample
    if sample is None or sample.domain not in DOMAINS or "box" not in sample.meta:
        return None
    try:
        box = get_domain(sample.domain).seen_box(sample, s.seen_size)
    except (KeyError, ValueError, TypeError):
        return None
    pad = 8  # a margin: the frame's own border stays in view
    return [max(0, box[0] - pad), max(0, box[1] - pad), box[2] + pad, box[3] + pad]


def state(s: Session, store: ImageStore, replay_index: int = 0) -> dict[str, Any]:
    """Everything the page shows, as JSON."""
    cfg = s.acfg
    note = ("exact tokens from the loaded processor" if s.tokenized else
            "no model loaded: seen sizes and tokens per image are computed from the config's "
            f"pixel budget (agent.min_pixels={cfg.min_pixels}, agent.max_pixels="
            f"{cfg.max_pixels}) with smart_resize; no token ids, so the loss mask is shown per "
            "turn (assistant turns are policy tokens)")
    out: dict[str, Any] = {
        "policy": {"mode": "manual" if s.manual else "model", "path": s.policy_path,
                   "tokenized": s.tokenized, "note": note},
        "config": {"format": s.fmt.name, "start": s.fmt.start, "stop": s.fmt.stop,
                   "tools": list(s.tools),
                   "min_pixels": cfg.min_pixels, "max_pixels": cfg.max_pixels,
                   "max_turns": cfg.max_turns, "max_tool_calls": cfg.max_tool_calls},
        "domains": {k: list(v.KINDS) for k, v in DOMAINS.items()},
        "sample": None, "episode": None, "suggest": suggestion(s), "score": s.score,
        "replay": None,
    }
    if s.sample is not None:
        sm = s.sample
        out["sample"] = {"id": sm.id, "prompt": sm.prompt, "domain": sm.domain,
                         "answer": None if sm.answer is None else str(sm.answer),
                         "images": {k: list(im.size) for k, im in sm.images.items()},
                         "notes": list(s.notes)}
    if s.episode is not None:
        out["episode"] = episode_view(s, s.trajectory(), store, live=True) | {
            "done": s.episode.done}
    if s.replay:
        i = min(max(0, replay_index), len(s.replay) - 1)
        out["replay"] = {"path": s.replay_path, "index": i,
                         "episodes": [t.id for t in s.replay],
                         "episode": episode_view(s, s.replay[i], store, live=False)}
    return out

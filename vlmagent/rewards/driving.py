"""DriveAgent-R1 answer accuracy of a driving episode: the meta-actions the policy wrote
against the label (vlmagent.drive.labels), as in the released code.

The answer is the LAST `<meta actions>...</meta actions>` block of the text: a list of 4
entries (now, +2 s, +4 s, +6 s), each "SPEED, PATH", as JSON (or a Python literal):

    <meta actions>["Keep Speed, Straight", "Decelerate, Straight", "Stop, Straight",
    "Stop, Straight"]</meta actions>
    <meta actions>[["Keep Speed", "Straight"], ...]</meta actions>

Words are matched case-insensitively with whitespace collapsed; anything else (another
count, an unknown word, no tag) is unparsable and scores 0.

    r_speed = 0.7 * edit_similarity(predicted speeds, label speeds)
    r_path  = 0.3 * edit_similarity(predicted paths, label paths)
    reward  = r_speed + r_path                               in [0, 1]

edit_similarity is 1 - (weighted edit distance) / (longer length), with insertions and
deletions costing 0.6 and a substitution 1 - match (1 for different words): a sequence shifted
by one step keeps partial credit. The format score, tool-call quality and mode rewards are in
vlmagent.rewards.episode.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

from vlmagent.drive.labels import PATHS, SPEEDS, STEPS

SPEED_WEIGHT, PATH_WEIGHT = 0.7, 0.3
INDEL = 0.6
_BLOCK = re.compile(r"<meta actions>(.*?)</meta actions>", re.S | re.I)
_SPEED = {s.lower(): s for s in SPEEDS}
_PATH = {p.lower(): p for p in PATHS}


def _word(x: Any, vocab: dict[str, str]) -> str | None:
    return vocab.get(" ".join(x.split()).lower()) if isinstance(x, str) else None


def _entry(x: Any) -> tuple[str, str] | None:
    """One "SPEED, PATH" string or [SPEED, PATH] pair, canonically spelled; None if invalid."""
    if isinstance(x, str):
        x = x.split(",")
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        return None
    speed, path = _word(x[0], _SPEED), _word(x[1], _PATH)
    return (speed, path) if speed and path else None


def _parse(text: str) -> tuple[list[tuple[str, str]] | None, str]:
    """(entries, "") or (None, why it is unparsable)."""
    blocks = _BLOCK.findall(text or "")
    if not blocks:
        return None, "no <meta actions> block"
    body = blocks[-1].strip()
    try:
        items = json.loads(body)
    except ValueError:
        try:  # single quotes: a Python literal
            items = ast.literal_eval(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None, "the <meta actions> block is not a JSON list"
    if not isinstance(items, (list, tuple)):
        return None, "the <meta actions> block is not a list"
    if len(items) != STEPS:
        return None, f"{len(items)} entries, not {STEPS}"
    out = []
    for i, x in enumerate(items):
        e = _entry(x)
        if e is None:
            return None, f"entry {i} ({x!r}) is not 'SPEED, PATH' with SPEED in " \
                         f"{'/'.join(SPEEDS)} and PATH in {'/'.join(PATHS)}"
        out.append(e)
    return out, ""


def parse_meta_actions(text: str) -> list[tuple[str, str]] | None:
    """The 4 (speed, path) of the last <meta actions> block, canonically spelled, or None."""
    return _parse(text)[0]


def edit_similarity(a: Sequence[str], b: Sequence[str], indel: float = INDEL) -> float:
    """1 - weighted edit distance / max(len a, len b), clamped to [0, 1]; 1.0 for two empty
    sequences. Insert/delete cost `indel`, substitution 1 - match (0 for equal items)."""
    n, m = len(a), len(b)
    if max(n, m) == 0:
        return 1.0
    prev = [j * indel for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [i * indel] + [0.0] * m
        for j in range(1, m + 1):
            sub = prev[j - 1] + (0.0 if a[i - 1] == b[j - 1] else 1.0)
            cur[j] = min(sub, prev[j] + indel, cur[j - 1] + indel)
        prev = cur
    return min(1.0, max(0.0, 1.0 - prev[m] / max(n, m)))


def _label_pairs(label: Any) -> list[tuple[str, str]]:
    """A label as 4 (speed, path): a label row's meta_actions, or its text (with or without
    the tag). A bad label is a data error, not the policy's."""
    if isinstance(label, str):
        pairs = parse_meta_actions(label if "<meta actions>" in label.lower()
                                   else f"<meta actions>{label}</meta actions>")
    else:
        pairs = [_entry(x) for x in label]
        pairs = None if len(pairs) != STEPS or None in pairs else pairs
    if pairs is None:
        raise ValueError(f"not a meta-action label: {label!r}")
    return pairs


def meta_action_reward(text: str, label: Any) -> tuple[float, dict[str, Any]]:
    """(reward in [0, 1], details) of the policy's text against the label (4 [speed, path]).

    Details: parsed, reason (when not parsed), pred, r_speed, r_path, and the exact metrics
    speed_acc / path_acc (per-step means), first_frame_joint (step 0 speed and path both
    right) and seq_joint (mean over steps of both right); all 0 for an unparsable answer."""
    gold = _label_pairs(label)
    pred, reason = _parse(text)
    if pred is None:
        return 0.0, {"parsed": False, "reason": reason, "r_speed": 0.0, "r_path": 0.0,
                     "speed_acc": 0.0, "path_acc": 0.0, "first_frame_joint": 0.0,
                     "seq_joint": 0.0}
    r_speed = SPEED_WEIGHT * edit_similarity([p[0] for p in pred], [g[0] for g in gold])
    r_path = PATH_WEIGHT * edit_similarity([p[1] for p in pred], [g[1] for g in gold])
    speed_ok = [p[0] == g[0] for p, g in zip(pred, gold)]
    path_ok = [p[1] == g[1] for p, g in zip(pred, gold)]
    both = [s and p for s, p in zip(speed_ok, path_ok)]
    return r_speed + r_path, {
        "parsed": True, "pred": [list(p) for p in pred], "r_speed": r_speed, "r_path": r_path,
        "speed_acc": sum(speed_ok) / STEPS, "path_acc": sum(path_ok) / STEPS,
        "first_frame_joint": float(both[0]), "seq_joint": sum(both) / STEPS}


def meta_action_rewards(completions: Sequence[str], labels: Sequence[Any], **_: Any
                        ) -> list[float]:
    """TRL-style batch form: one reward per completion (labels[i] is completions[i]'s)."""
    return [meta_action_reward(c, g)[0] for c, g in zip(completions, labels, strict=True)]

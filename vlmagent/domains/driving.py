"""Driving (DriveAgent-R1) on any nuScenes dataroot: the generated one of `vlmagent drive
make-data`, or the real v1.0-mini / v1.0-trainval.

A sample is one labelled key frame: the front camera image, the navigation command and the ego
speed in the prompt, and as the answer the four meta-actions (now, +2 s, +4 s, +6 s) that the
label rule (drive/labels.py, recorded with every sample) derives from the future ego poses.
The tools (tools/drive.py) read the same dataset through the devkit: other cameras and earlier
frames, a zoomed region, LiDAR depth, oracle 3D boxes.

Splits are by scene, so no held-out key frame shares a scene with a training one: the devkit's
published splits for the real versions (mini_train / mini_val, train / val), else the 20% of
scenes whose names hash lowest. Seeds >= HELDOUT_FROM draw held-out samples (the trainer's
EVAL_SEED and probe seeds are above it).

Kinds say where the decisive cue is, from the generator's `scene.description` ("cue: ..."):
`front` (visible in the front camera at the model's resolution) or `tool` (a small region that
needs zooming, another camera, an earlier frame). Real scenes carry no cue and count as front.
Most `tool` frames can still be answered without the tool: once the ego brakes, its speed says
why. The generator marks scenarios that have a decoy twin (a red light / the same geometry with
a green one; a pedestrian who crosses / one who stays on the sidewalk) with the time the ego
reacts ("hidden until: 3.20 s"); frames before it are `cue_only`: speed and front image are the
same for both twins, so text mode can only guess. `accuracy/cue_only` reports them, and
domain.options.frames=cue_only evaluates on them alone (scripts/drive_modes.py --frames).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmagent.domains.common import load_samples, save_samples
from vlmagent.drive.labels import LabelRule, label_dataset
from vlmagent.drive.nusc import CAMERAS, boxes_in_view, load_nusc
from vlmagent.drive.synth_scenarios import SCENARIOS
from vlmagent.images import resize_seen
from vlmagent.protocol import get_format
from vlmagent.rewards.driving import meta_action_reward
from vlmagent.rewards.episode import Answer
from vlmagent.tools import TOOLS, ToolEnv
from vlmagent.tools.image import to_seen
from vlmagent.types import Sample, ToolCall

DOMAIN = "driving"
VERSION = 2  # bump when the same arguments would draw different samples (the sample cache key)
KINDS = ("front", "tool")
FRAMES = ("all", "cue_only")
ANSWER_TAG = "meta actions"
HELDOUT_FROM = 1_000_000  # seeds from here on draw held-out scenes
HELDOUT_SHARE = 0.2  # of the scenes of a version without a published split
# the devkit's published scene splits (nuscenes.utils.splits) for the real versions
SPLITS = {"v1.0-mini": ("mini_train", "mini_val"), "v1.0-trainval": ("train", "val")}
STOPPED = 0.5  # m/s: below it the expert describes the car as stopped
MIN_ROI_SEEN = 32  # seen_box's sides: at least this (the RoI tool needs more than 28)
# where the expert zooms on a free road: x0, y0, x1, y1 as fractions of the seen front image
# ([66, 26, 98, 58] of 140x84; the far lights of cue-only frames sit at x 78-88, y 37-44)
AHEAD = (0.47, 0.31, 0.70, 0.69)
NO_CUE = "no cue in front"  # text mode's reasoning where the cue is outside the front view

# The perception warm-up (train/warmup.py) on generated data: "where" (from the front image) is
# what the front camera can tell: the scenario where the front shows it, else the view that
# shows the cue; "what" (from the expert tool's image) is the scenario.
CUES = ("CAM_FRONT zoom", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_FRONT history")
FRONT = ("clear_road", "lead_vehicle_braking", "turn_left", "turn_right", *CUES)
CELLS = len(FRONT)
ANSWERS = {"scenario": list(SCENARIOS)}

__all__ = ["ANSWERS", "ANSWER_TAG", "CELLS", "DOMAIN", "HELDOUT_FROM", "KINDS", "VERSION",
           "ahead_box", "answer", "check", "eval_metrics", "expert_turns", "load_samples",
           "make_samples", "meta_text", "perception_batch", "save_samples", "seen_box",
           "split_frames"]


# ---------------------------------------------------------------- samples
def make_samples(n: int, seed: int, out_dir: str | Path, kinds: Sequence[str] = KINDS,
                 size: tuple[int, int] | None = None,
                 seen_size: Callable[[int, int], tuple[int, int]] | None = None,
                 dataroot: str | None = None, version: str = "v1.0-mini",
                 rule: dict[str, Any] | None = None, frames: str = "all",
                 cue_only_share: float = 0.0) -> list[Sample]:
    """n labelled key frames of the split `seed` selects, drawn without repeats while the split
    lasts. `rule`: label thresholds overriding the defaults (domain.options.rule). `frames`
    (domain.options.frames): "all", or "cue_only": only frames of scenarios with a decoy twin
    before the ego reacts, where only a tool shows which twin it is (generated data).
    `cue_only_share` (training draws only): that share of the samples are cue-only frames,
    drawn from their own shuffled pool (about 7% of the frames otherwise)."""
    if frames not in FRAMES:
        raise ValueError(f"domain.options.frames: {frames!r} (valid: {', '.join(FRAMES)})")
    if not dataroot:
        raise ValueError("driving needs domain.dataroot: a nuScenes folder (make one with "
                         "`vlmagent drive make-data --out DIR --scenes N`)")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown driving kind {bad[0] if bad else None!r} "
                         f"(valid: {', '.join(KINDS)})")
    rows = _rows(dataroot, version, rule)
    held = seed >= HELDOUT_FROM
    pool = _select(rows, held, kinds, frames)
    if not pool:
        raise ValueError(f"no {'held-out' if held else 'training'} driving samples of kinds "
                         f"{list(kinds)} in {dataroot} ({version}): {len(rows)} labelled key "
                         "frames in all")
    rng = np.random.default_rng(seed)
    order = _shuffled(pool, n, rng)
    if cue_only_share > 0 and not held:
        only = [r for r in pool if r["cue_only"]]
        if only:
            extra = iter(_shuffled(only, n, rng))
            order = [next(extra) if u < cue_only_share else r
                     for r, u in zip(order, rng.random(n))]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return [_sample(r) for r in order]


def split_frames(dataroot: str | Path, version: str, heldout: bool,
                 kinds: Sequence[str] = KINDS, frames: str = "all",
                 rule: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The labelled key frames (rows) of the training or held-out split that `kinds` and
    `frames` select: what make_samples draws from."""
    return _select(_rows(dataroot, version, rule), heldout, kinds, frames)


def _rows(dataroot: str | Path, version: str, rule: dict[str, Any] | None) -> list[dict]:
    return _labelled(str(Path(dataroot).resolve()), version,
                     json.dumps(rule or {}, sort_keys=True))


def _select(rows: list[dict[str, Any]], heldout: bool, kinds: Sequence[str],
            frames: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["heldout"] == heldout and r["kind"] in kinds
            and (frames == "all" or r["cue_only"])]


def _shuffled(pool: list[dict[str, Any]], n: int, rng: np.random.Generator) -> list[dict]:
    """n rows, a full shuffle per pass: repeats only once the pool is used up."""
    order: list[dict[str, Any]] = []
    while len(order) < n:
        order += [pool[i] for i in rng.permutation(len(pool))]
    return order[:n]


@functools.cache
def _labelled(dataroot: str, version: str, rule_json: str) -> list[dict[str, Any]]:
    """Every labelled key frame of the dataset with what a sample needs (once per process)."""
    nusc = load_nusc(dataroot, version)
    rule = LabelRule.from_dict(json.loads(rule_json)) if rule_json != "{}" else LabelRule()
    held = _heldout_scenes(nusc, version)
    scenes = {s["name"]: s for s in nusc.scene}
    out = []
    for lab in label_dataset(nusc, rule):
        scene = scenes[lab["scene"]]
        cue = _cue(scene.get("description", ""))
        sample = nusc.get("sample", lab["sample_token"])
        t0 = nusc.get("sample", scene["first_sample_token"])["timestamp"]
        hidden = _hidden_until(scene.get("description", ""))
        # the prompt's speed spans the next key frame (labels.ego_speed): it must end in time
        t_end = nusc.get("sample", sample["next"])["timestamp"] if sample["next"] else \
            sample["timestamp"]
        cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        out.append({**lab, "dataroot": dataroot, "version": version,
                    "image": nusc.get_sample_data_path(cam["token"]),
                    "size": [cam["width"], cam["height"]],
                    "heldout": scene["name"] in held, "cue": cue,
                    "scenario": _scenario(scene.get("description", "")),
                    "kind": "front" if cue in (None, "CAM_FRONT") else "tool",
                    # the ego has not reacted yet: speed and front image are its decoy twin's
                    "cue_only": hidden is not None and cue not in (None, "CAM_FRONT")
                    and (t_end - t0) / 1e6 <= hidden,
                    "cue_box": _cue_box(nusc, cam["token"]) if cue == "CAM_FRONT zoom" else None})
    return out


def _heldout_scenes(nusc: Any, version: str) -> set[str]:
    names = [s["name"] for s in nusc.scene]
    if version in SPLITS:
        from nuscenes.utils.splits import create_splits_scenes
        return set(create_splits_scenes()[SPLITS[version][1]]) & set(names)
    if len(names) < 2:
        return set()
    groups: dict[str, list[str]] = {}  # decoy twins (make-data --twins) stay on one side
    for s in nusc.scene:
        m = re.search(r"twin group:\s*(\d+)", s.get("description", ""))
        groups.setdefault(f"twin group {m.group(1)}" if m else s["name"], []).append(s["name"])
    held, want = set(), max(1, math.ceil(HELDOUT_SHARE * len(names)))
    for key in sorted(groups, key=lambda k: hashlib.sha256(k.encode()).hexdigest()):
        if len(held) >= want:
            break
        held.update(groups[key])
    return held


def _cue(description: str) -> str | None:
    m = re.search(r"cue:\s*([^;]+)", description)
    return m.group(1).strip() if m else None


def _hidden_until(description: str) -> float | None:
    m = re.search(r"hidden until:\s*([0-9.]+)\s*s", description)
    return float(m.group(1)) if m else None


def _scenario(description: str) -> str:
    m = re.search(r"synthetic:\s*([\w-]+)", description)
    return m.group(1) if m else "real"


def _cue_box(nusc: Any, cam_token: str) -> list[float] | None:
    """The traffic light's box in the front image (original pixels): where the expert zooms."""
    lights = [b for b in boxes_in_view(nusc, cam_token) if "traffic_light" in b["class"]]
    return min(lights, key=lambda b: b["distance"])["box2d"] if lights else None


def _sample(r: dict[str, Any]) -> Sample:
    speed = r.get("ego_speed") or 0.0
    prompt = (f"Front camera. Navigation: {r['nav_command']}. Speed: {speed:.1f} m/s. "
              "Predict the meta actions (speed, path) for now, +2 s, +4 s and +6 s.")
    meta = {"drive": {"dataroot": r["dataroot"], "version": r["version"],
                      "sample_token": r["sample_token"]},
            "kind": r["kind"], "scenario": r["scenario"], "cue": r["cue"], "scene": r["scene"],
            "cue_only": r["cue_only"],
            "nav_command": r["nav_command"], "ego_speed": speed, "rule": r["rule"],
            "size": r["size"], "padded": r.get("padded", False)}
    if r["cue_box"] is not None:
        meta["box"] = [float(v) for v in r["cue_box"]]
    return Sample(id=f"{r['scene']}-{r['sample_token'][:8]}", prompt=prompt,
                  images={"CAM_FRONT": r["image"]}, answer=r["meta_actions"], domain=DOMAIN,
                  meta=meta)


# ---------------------------------------------------------------- answers
def meta_text(actions: Sequence[Sequence[str]]) -> str:
    """The answer block for four [speed, path] steps."""
    return f"<meta actions>{json.dumps([f'{s}, {p}' for s, p in actions])}</meta actions>"


def answer(text: str, sample: Sample) -> Answer:
    """DriveAgent-R1's answer reward (0.7 speed + 0.3 path edit similarity); the accuracy
    reported is the sequence-average joint accuracy (both right, over the four steps)."""
    value, details = meta_action_reward(text, sample.answer)
    return Answer(value, float(details.get("seq_joint", 0.0)), details)


def check(answer_text: str, sample: Sample) -> float:
    return answer(answer_text, sample).accuracy


def eval_metrics(samples: Sequence[Sample], accuracy: Sequence[float],
                 details: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
    """First-frame and sequence-average joint accuracy, speed and path accuracy, and the
    accuracy per kind (front / tool: does looking closer pay where only a tool shows the cue)."""
    out: dict[str, float] = {}
    details = list(details or [{}] * len(samples))
    for key in ("first_frame_joint", "seq_joint", "speed_acc", "path_acc"):
        out[key] = sum(float(d.get(key, 0.0)) for d in details) / max(1, len(details))
    out["parsed"] = sum(bool(d.get("parsed")) for d in details) / max(1, len(details))
    for group in ("kind", "scenario"):
        by: dict[str, list[float]] = {}
        for s, a in zip(samples, accuracy, strict=True):
            by.setdefault(str(s.meta.get(group)), []).append(a)
        out.update({f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by.items())}
                   if group == "kind" else
                   {f"scenario/{k}": sum(v) / len(v) for k, v in sorted(by.items())})
    cue_only = [a for s, a in zip(samples, accuracy, strict=True) if s.meta.get("cue_only")]
    if cue_only:  # the frames where only a tool can tell (few: report how many)
        out["accuracy/cue_only"] = sum(cue_only) / len(cue_only)
        out["n_cue_only"] = float(len(cue_only))
    return out


# ---------------------------------------------------------------- experts
def seen_box(sample: Sample, seen_size: Callable[[int, int], tuple[int, int]]) -> list[int]:
    """Where the far traffic light is, in the front image as the model sees it (what the
    debugger marks): its box grown to MIN_ROI_SEEN per side, or the whole image. The expert
    zooms ahead_box instead, which holds it on every cue-only frame."""
    w, h = sample.meta["size"]
    sw, sh = seen_size(w, h)
    if "box" not in sample.meta:
        return [0, 0, sw, sh]
    x0, y0, x1, y1 = to_seen(sample.meta["box"], (w, h), (sw, sh))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = max(x1 - x0, MIN_ROI_SEEN) / 2, max(y1 - y0, MIN_ROI_SEEN) / 2
    x0 = int(min(max(0, cx - half_w), sw - 2 * half_w))
    y0 = int(min(max(0, cy - half_h), sh - 2 * half_h))
    return [max(0, x0), max(0, y0), min(sw, x0 + math.ceil(2 * half_w)),
            min(sh, y0 + math.ceil(2 * half_h))]


def ahead_box(sample: Sample, seen_size: Callable[[int, int], tuple[int, int]]) -> list[int]:
    """The road ahead near the horizon, in the front image as the model sees it: AHEAD's
    fractions of the seen size. Every far traffic light of a generated cue-only frame falls in
    it (a 32x32 box of the 140x84 front image), so an expert can zoom there knowing only what
    the front camera shows."""
    w, h = sample.meta["size"]
    sw, sh = seen_size(w, h)
    x0, y0, x1, y1 = AHEAD
    return [round(x0 * sw), round(y0 * sh), round(x1 * sw), round(y1 * sh)]


def expert_call(sample: Sample, seen_size: Callable[[int, int], tuple[int, int]]) -> ToolCall:
    """The call that shows the sample's decisive cue: a zoom on the road ahead where the front
    camera shows a free road (a far light there is below a pixel: red, green or none is what the
    zoom tells), the camera the cue is in, the frame a second earlier, or (cue in front / real
    data) the 3D objects. The zoom box is fixed (ahead_box), not the light's own box: which box
    to zoom must follow from what the policy can see, or it cannot learn the call (with the
    light's box the policy could not tell a far light from a free road and called a side camera
    on 12 of 16 cue-only frames)."""
    cue = sample.meta.get("cue") or "CAM_FRONT"
    if cue == "CAM_FRONT zoom" or sample.meta.get("scenario") == "clear_road":
        return ToolCall("RoI_Inspection", {"view_index": 0, "bbox": ahead_box(sample, seen_size),
                                           "description": "road ahead"})
    if "history" in cue or "earlier" in cue:
        return ToolCall("get_view_with_frame", {"view_index": 0, "frame_index": 1})
    cam = cue.split()[0]
    if cam in CAMERAS and cam != "CAM_FRONT":
        return ToolCall("get_view_with_frame", {"view_index": CAMERAS.index(cam),
                                                "frame_index": 0})
    return ToolCall("detect_3d_objects", {"view_index": 0})


def expert_turns(sample: Sample, mode: str, seen_size_fn: Callable[[int, int], tuple[int, int]],
                 fmt: str = "drive") -> list[str]:
    """Scripted turns in DriveAgent-R1's layout, short for tiny models: the description says
    whether the car is stopped (read from the prompt's speed) and the navigation command; the
    scenario is named in <reasoning> (after the tool's image in tool mode) right before the
    prediction, so each decision is a few tokens at one place. (Naming the front view's class
    in the description too, which decides the call, lowered the tiny recipe's held-out accuracy
    after DM-SFT from 0.71 to 0.54.)
    tool mode: [description, the call that shows the cue; reasoning, prediction, answer]."""
    actions = sample.answer
    state = "stopped" if sample.meta.get("ego_speed", 0.0) < STOPPED else "moving"
    desc = f"<description>{state}, {sample.meta['nav_command']}</description>"
    scenario = sample.meta["scenario"]  # real scenes: nobody wrote one down; say the speed
    why = scenario.replace("_", " ") if scenario in SCENARIOS else \
        f"{sample.meta.get('ego_speed', 0.0):.0f} m/s"
    if mode == "text" and sample.meta.get("kind") == "tool":
        # text mode names only what the front camera shows: naming a far light's colour there
        # taught the LM to write the scenario from its prior, the shortcut tool mode must not take
        why = NO_CUE
    tail = (f"<reasoning>{why}</reasoning>"
            f"<prediction>{actions[0][0]}</prediction>")
    if mode == "text":
        return [f"<think_no_tools>{desc}{tail}</think_no_tools>{meta_text(actions)}"]
    if mode != "tool":
        raise ValueError(f"unknown mode {mode!r} (valid: tool, text)")
    call = get_format(fmt).render_call(expert_call(sample, seen_size_fn))
    return [f"<think_with_tools>{desc}{call}",
            f"{tail}</think_with_tools>{meta_text(actions)}"]


def front_class(sample: Sample) -> str:
    """The FRONT class: the scenario where the front shows it, else the cue's view."""
    cue = sample.meta.get("cue") or "CAM_FRONT"
    return sample.meta["scenario"] if cue == "CAM_FRONT" else cue


# ---------------------------------------------------------------- perception warm-up
def perception_batch(n: int, seed: int, seen_size: Callable[[int, int], tuple[int, int]],
                     difficulty: float = 1.0, dataroot: str | None = None,
                     version: str = "v1.0-mini", rule: dict[str, Any] | None = None,
                     cue_only_share: float = 0.0) -> list[dict[str, Any]]:
    """n training key frames for the warm-up: {overview (the front image as seen), zoom (the
    image of the expert's call, as seen), cell (FRONT index), label (ANSWERS index)}. Needs
    the generator's scenario and cue per scene, so generated data only. (`difficulty`: every
    key frame is as hard as it is.) `cue_only_share` as in make_samples: the far red / green
    light is a few pixels of the zoom, and the warm-up must see it as often as training does."""
    # training frames only, whatever the seed: the trainer's per-step seeds run past
    # HELDOUT_FROM, and until this fold the warm-up drew held-out scenes
    samples = make_samples(n, seed % HELDOUT_FROM, Path(dataroot or "."), dataroot=dataroot,
                           version=version, rule=rule, cue_only_share=cue_only_share)
    if any(s.meta["scenario"] not in SCENARIOS for s in samples):
        raise ValueError("the driving warm-up needs generated scenes (scenario and cue in "
                         "scene.description); real nuScenes has neither")
    out = []
    for s in samples:
        env = ToolEnv.from_sample(s, seen_size=seen_size)
        front = env.images["CAM_FRONT"]
        call = expert_call(s, seen_size)
        result = TOOLS[call.name]()(call.arguments, env)
        if result.error:
            raise ValueError(f"{s.id}: the expert's {call.name} failed: {result.error}")
        view = env.images[next(reversed(env.images))]
        out.append({"overview": resize_seen(front.image, front.seen),
                    "zoom": resize_seen(view.image, view.seen),
                    "cell": FRONT.index(front_class(s)),
                    "label": SCENARIOS.index(s.meta["scenario"]), "scene": s.meta["scene"]})
    return out

"""ZoomRes, the mixed task for the resolution router: deterministic samples, fine patches whose
colour is gone at the low level (a quarter of the pixels) and readable at the full level, coarse
patches readable at both, and an image statistic that tells the two kinds apart."""
from __future__ import annotations

import numpy as np
import pytest

from vlmagent.domains import zoomres
from vlmagent.images import QWEN2_5_VL_DEFAULT, Budget, load_image, resize_seen
from vlmagent.protocol import FORMATS, parse_answer, parse_mode
from vlmagent.types import ToolCall

FULL = zoomres.FULL.seen_size  # the default budget: 112 x 112 seen as is
LOW = (56, 56)


def budget(side: int):
    return Budget(QWEN2_5_VL_DEFAULT.factor, side * side, side * side).seen_size


def detail(image) -> float:
    """Mean absolute grey-level difference between the image at the full level and the low-level
    image scaled back up: what the low level throws away."""
    grey = image.convert("L")
    full = np.asarray(resize_seen(grey, (112, 112)), np.float32)
    up = resize_seen(resize_seen(grey, LOW), (112, 112))
    return float(np.abs(full - np.asarray(up, np.float32)).mean())


def test_same_arguments_same_samples(tmp_path):
    a = zoomres.make_samples(12, 4, tmp_path / "a", fine_fraction=0.5)
    b = zoomres.make_samples(12, 4, tmp_path / "b", fine_fraction=0.5)
    c = zoomres.make_samples(12, 5, tmp_path / "c", fine_fraction=0.5)
    assert [(s.answer, s.meta["kind"]) for s in a] == [(s.answer, s.meta["kind"]) for s in b]
    for x, y in zip(a, b):
        assert (tmp_path / "a" / f"{x.id}.png").read_bytes() == (
            tmp_path / "b" / f"{y.id}.png").read_bytes()
    assert [np.asarray(load_image(s.images["image"])).tobytes() for s in a] != [
        np.asarray(load_image(s.images["image"])).tobytes() for s in c]
    assert {s.meta["kind"] for s in a} == {"fine", "coarse"}
    s = a[0]
    assert s.prompt.startswith("What colour is the patch on the card?")
    assert s.answer in zoomres.ANSWERS["color"] and s.meta["cell"] == zoomres.KINDS.index(
        s.meta["kind"])
    assert s.meta["size"] == [112, 112] and s.meta["stripe"] == 1 and s.meta["seed"] == 4


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_fine_fraction_and_single_kinds(tmp_path, fraction):
    samples = zoomres.make_samples(200, 1, tmp_path, fine_fraction=fraction)
    fine = sum(s.meta["kind"] == "fine" for s in samples)
    assert abs(fine - 200 * fraction) <= 25, fine  # ~3.9 sigma
    answers = {a: sum(s.answer == a for s in samples) for a in zoomres.ANSWERS["color"]}
    assert min(answers.values()) >= 30, answers  # every colour drawn (50 expected)
    for kind in zoomres.KINDS:
        got = zoomres.make_samples(20, 1, tmp_path / kind, kinds=(kind,), fine_fraction=fraction)
        assert [s.meta["kind"] for s in got] == [kind] * 20
        assert [s.meta["cell"] for s in got] == [zoomres.KINDS.index(kind)] * 20
    with pytest.raises(ValueError, match="valid: fine, coarse"):
        zoomres.make_samples(2, 1, tmp_path, kinds=("medium",))


# ---------------------------------------------------------------- the physics
def test_fine_colour_is_gone_at_the_low_level_and_readable_at_the_full_level():
    for seed in range(6):
        lows = []
        for label, name in enumerate(zoomres.INKS):  # the same scene, only the ink changes
            image, spec = zoomres.make_image(seed, label=label)
            ink = np.array(zoomres.INKS[name], np.float64)
            x0, y0, x1, y1 = spec["swatch"]
            assert x0 % 2 == 0 and (x1 - x0) >= 112 // 3 and (y1 - y0) >= 112 // 3
            low = np.asarray(resize_seen(image, LOW), np.float64)
            lows.append(low.astype(np.int16))
            inner = low[y0 // 2 + 1:y1 // 2 - 1, x0 // 2 + 1:x1 // 2 - 1].reshape(-1, 3)
            assert inner.std(0).max() < 3, (seed, name, inner.std(0))
            assert np.abs(inner.mean(0) - 127.5).max() < 3, (seed, name, inner.mean(0))
            full = np.asarray(resize_seen(image, FULL(*image.size)), np.float64)
            assert full.shape == (112, 112, 3)  # the full level sees the original pixels
            t = zoomres.TAPER  # the flat part of the stripes (past the tapered ends)
            even = full[y0:y1, x0 + t:x1 - t:2].reshape(-1, 3).mean(0)
            odd = full[y0:y1, x0 + t + 1:x1 - t:2].reshape(-1, 3).mean(0)
            assert np.abs(even - ink).max() <= 1, (seed, name, even)
            assert np.abs(odd - (255 - ink)).max() <= 1, (seed, name, odd)
            whole = full[y0:y1, x0:x1:2].reshape(-1, 3).mean(0)  # tapered ends included
            assert np.abs(whole - ink).max() < 15, (seed, name, whole)
        # the whole low-level image, not just the patch: the inks differ by rounding only
        diffs = [np.abs(x - lows[0]) for x in lows[1:]]
        assert max(int(d.max()) for d in diffs) <= 3, seed
        assert max(float(d.mean()) for d in diffs) < 0.1, seed


def test_coarse_colour_survives_the_low_level():
    for seed in range(6):
        for label, name in enumerate(zoomres.INKS):
            image, spec = zoomres.make_image(seed, kind="coarse", label=label)
            x0, y0, x1, y1 = (v // 2 for v in spec["swatch"])
            low = np.asarray(resize_seen(image, LOW), np.float64)
            inner = low[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3)
            assert np.abs(inner.mean(0) - zoomres.INKS[name]).max() < 2, (seed, name)
            assert inner.std(0).max() < 1, (seed, name)


def test_detail_lost_at_the_low_level_separates_the_kinds(tmp_path):
    samples = zoomres.make_samples(40, 3, tmp_path, fine_fraction=0.5)
    by_kind = {k: [detail(load_image(s.images["image"])) for s in samples
                   if s.meta["kind"] == k] for k in zoomres.KINDS}
    assert min(len(v) for v in by_kind.values()) >= 10, by_kind
    lo_fine, hi_coarse = min(by_kind["fine"]), max(by_kind["coarse"])
    msg = f"min fine {lo_fine:.2f}, max coarse {hi_coarse:.2f}"
    # measured 7.2 and 0.8 grey levels: the heuristic router's default threshold (6) fits
    assert lo_fine > 6.0 > hi_coarse, msg
    assert lo_fine > 4 * hi_coarse, msg


def test_stripes_follow_the_full_level_rule(tmp_path):
    seen = budget(112)  # a 224 px image seen at 112: two original pixels per stripe
    s = zoomres.make_samples(1, 0, tmp_path, kinds=("fine",), size=(224, 224), seen_size=seen)[0]
    assert s.meta["stripe"] == 2 and s.meta["swatch"][0] % 4 == 0
    image = load_image(s.images["image"])
    x0, y0, x1, y1 = (v // 2 for v in s.meta["swatch"])
    full = np.asarray(resize_seen(image, (112, 112)), np.float64)[y0:y1, x0 + 8:x1 - 8]
    low = np.asarray(resize_seen(image, LOW), np.float64)[y0 // 2 + 1:y1 // 2 - 1,
                                                          x0 // 2 + 1:x1 // 2 - 1]
    ink = np.array(zoomres.INKS[s.answer], np.float64)
    # one stripe per seen pixel at the full level (the 2x downscale softens it somewhat)
    contrast = (full[:, 0::2] - full[:, 1::2]).reshape(-1, 3).mean(0)  # ideal: 2 (ink - mid)
    gain = contrast @ (ink - 127.5) / (2 * ((ink - 127.5) ** 2).sum())
    assert gain > 0.5, (gain, contrast)
    assert low.reshape(-1, 3).std(0).max() < 3
    with pytest.raises(ValueError, match="out of phase"):
        zoomres.make_samples(1, 0, tmp_path, size=(120, 120), seen_size=budget(112))


# ---------------------------------------------------------------- expert, check, files
def test_expert_turns_parse_and_check(tmp_path):
    samples = zoomres.make_samples(10, 2, tmp_path, fine_fraction=0.5)
    for s in samples:
        first, last = zoomres.expert_turns(s, "tool", FULL)
        call = FORMATS["hermes"].parse(first)
        assert isinstance(call, ToolCall), call
        assert call.name == "full_resolution" and call.arguments == {"image": "image"}
        assert parse_mode(first) == "tool" and first.startswith("<think_with_tools><tool_call>")
        assert zoomres.check(last, s) == 1.0 and parse_answer(last) == s.answer
        (text,) = zoomres.expert_turns(s, "text", FULL)
        assert parse_mode(text) == "text" and zoomres.check(text, s) == 1.0
        wrong = next(a for a in zoomres.ANSWERS["color"] if a != s.answer)
        assert zoomres.check(f"<answer>{wrong}</answer>", s) == 0.0
        assert zoomres.check(f"<answer> {s.answer.upper()}. </answer>", s) == 1.0
        assert zoomres.expert_mode(s) == {"fine": "tool", "coarse": "text"}[s.meta["kind"]]
    with pytest.raises(ValueError, match="unknown mode"):
        zoomres.expert_turns(samples[0], "zoom", FULL)


def test_files_metrics_and_seen_box(tmp_path):
    samples = zoomres.make_samples(8, 6, tmp_path, fine_fraction=0.5)
    zoomres.save_samples(samples, tmp_path / "s.jsonl")
    assert zoomres.load_samples(tmp_path / "s.jsonl") == samples
    acc = [1.0 if s.meta["kind"] == "coarse" else float(i % 2) for i, s in enumerate(samples)]
    fine = [a for a, s in zip(acc, samples) if s.meta["kind"] == "fine"]
    m = zoomres.eval_metrics(samples, acc)
    assert set(m) == {"accuracy/fine", "accuracy/coarse"} and m["accuracy/coarse"] == 1.0
    assert m["accuracy/fine"] == pytest.approx(sum(fine) / len(fine))
    for s in samples:
        assert zoomres.seen_box(s, FULL) == s.meta["swatch"]
        x0, y0, x1, y1 = s.meta["swatch"]
        assert zoomres.seen_box(s, budget(56)) == [x0 // 2, y0 // 2, -(-x1 // 2), -(-y1 // 2)]


def test_perception_batch():
    batch = zoomres.perception_batch(12, 0, FULL)
    assert [b["overview"].size for b in batch] == [(56, 56)] * 12
    assert [b["zoom"].size for b in batch] == [(112, 112)] * 12
    assert sorted(b["cell"] for b in batch) == [0] * 6 + [1] * 6
    assert all(0 <= b["label"] < len(zoomres.ANSWERS["color"]) for b in batch)
    assert zoomres.CELLS == 2 and zoomres.low_size((112, 112)) == (56, 56)
    again = zoomres.perception_batch(12, 0, FULL)
    assert [(b["cell"], b["label"], b["zoom"].tobytes()) for b in batch] == [
        (b["cell"], b["label"], b["zoom"].tobytes()) for b in again]
    # the cell is what the detail statistic sees: fine examples lose far more at the low level
    lost = [(detail(b["zoom"]), b["cell"]) for b in batch]
    assert min(d for d, c in lost if c == 0) > 4 * max(d for d, c in lost if c == 1), lost
    small = zoomres.perception_batch(4, 1, budget(56))  # full level 56: low level 28
    assert [(b["overview"].size, b["zoom"].size) for b in small] == [((28, 28), (56, 56))] * 4

"""Aesthetic judges: one interface, three backends, chosen by reward.aesthetics.judge (or
`vlmagent score --judge`).

    judge = build_judge(cfg.reward.aesthetics)
    verdict = judge(evidence, deadline)     # Verdict(score 0..5 or None, raw, error, seconds)

metrics  the weight-free measures (aesthetics.py computes them; this judge just reports them)
vlm      a local Qwen-VL checkpoint (path or hub id) prompted with RUBRIC on the screenshots
openai   any OpenAI-compatible chat endpoint (vLLM, a hosted API): stdlib urllib, timeouts,
         retries with exponential backoff, and a per-judge concurrency limit

A judge never raises for what a model says or for a server that misbehaves: unparseable output,
HTTP errors and timeouts come back as a Verdict with score None and the reason in `error`.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vlmagent.config import AestheticsConfig, OpenAIJudgeConfig, VlmJudgeConfig

RUBRIC = (
    "You are judging the visual design of a website from screenshots (desktop first, then "
    "mobile). Rate it from 0 to 5: 0 blank or broken, 1 unstyled or unreadable, 2 styled but "
    "with clear flaws (low contrast, overlapping or cut-off content, clutter, a layout that "
    "breaks on mobile), 3 acceptable, 4 good, 5 polished and professional. Consider "
    "legibility, hierarchy, alignment, spacing, colour harmony and consistency. Answer with "
    "one line: Score: <number from 0 to 5>."
)
RAW_KEEP = 500  # characters of model output kept in details


@dataclass
class Shot:
    page: str
    viewport: str  # "desktop" | "mobile"
    png: bytes


@dataclass
class Evidence:
    """What a judge sees of one site: screenshots (index first) and the metric score."""

    shots: list[Shot] = field(default_factory=list)
    metrics_score: float | None = None  # 0..5 from the measures
    # viewport -> its height: judges see the first screen of each full-page shot
    screens: dict[str, int] = field(default_factory=lambda: {"desktop": 800, "mobile": 812})


@dataclass
class Verdict:
    judge: str
    score: float | None  # 0..5; None when the judge failed
    raw: str = ""
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.judge, "score": self.score, "raw": self.raw[:RAW_KEEP],
                "error": self.error, "attempts": self.attempts, "seconds": round(self.seconds, 3)}


_JSON_SCORE = re.compile(r'"score"\s*:\s*"?(-?\d+(?:\.\d+)?)')
_LABELLED = re.compile(r"\b(?:score|rating)\b\s*(?:is|of|=|:)?\s*\**\s*(-?\d+(?:\.\d+)?)"
                       r"(?:\s*(?:/|out of)\s*5(?:\.0)?)?", re.I)
_OUT_OF = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*5(?:\.0)?\b", re.I)
_BARE = re.compile(r"^\s*\**\s*(-?\d+(?:\.\d+)?)\s*\**\s*\.?\s*$")


def parse_score(text: str) -> float | None:
    """A 0-5 score from model output, or None. Accepts 'Score: 4', '{"score": 3.5}', '4/5',
    'rating of 4 out of 5' and a bare number; the LAST labelled score wins (models often
    restate). Anything outside 0..5 or ambiguous (several bare numbers) is None."""
    if not isinstance(text, str):
        return None
    text = text.replace("\u2009", " ")[:20000]
    for pattern in (_JSON_SCORE, _LABELLED, _OUT_OF):
        found = pattern.findall(text)
        if found:
            v = float(found[-1])
            return v if 0.0 <= v <= 5.0 else None
    m = _BARE.match(text)
    if m:
        v = float(m.group(1))
        return v if 0.0 <= v <= 5.0 else None
    return None


class MetricsJudge:
    """The weight-free measures: runs anywhere, deterministic."""

    name = "metrics"

    def __call__(self, ev: Evidence, deadline: float | None = None) -> Verdict:
        if ev.metrics_score is None:
            return Verdict(self.name, None, error="no page could be measured")
        return Verdict(self.name, ev.metrics_score, attempts=1)


def _first_screen(ev: Evidence, shot: Shot) -> Any:
    """The first screen of a full-page screenshot, as a PIL image."""
    from PIL import Image

    im = Image.open(io.BytesIO(shot.png)).convert("RGB")
    return im.crop((0, 0, im.width, min(im.height, ev.screens[shot.viewport])))


def _pick(shots: list[Shot], n: int) -> list[Shot]:
    """Index desktop, index mobile, then the other pages' desktop shots."""
    first = [s for s in shots if s.page == shots[0].page] if shots else []
    rest = [s for s in shots if s.page != shots[0].page and s.viewport == "desktop"]
    return (first + rest)[:max(1, n)]


class VLMJudge:
    """A local Qwen-VL model (vlmagent.policy.Policy), loaded on first use, greedy decoding."""

    name = "vlm"

    def __init__(self, cfg: VlmJudgeConfig, policy: Any = None) -> None:
        self.cfg = cfg
        self._policy = policy

    def policy(self) -> Any:
        if self._policy is None:
            from vlmagent.policy import Policy

            if not self.cfg.path:
                raise ValueError("reward.aesthetics.vlm.path is empty: give a model folder or "
                                 "hub id")
            self._policy = Policy.from_pretrained(self.cfg.path, self.cfg.dtype, self.cfg.device)
        return self._policy

    def __call__(self, ev: Evidence, deadline: float | None = None) -> Verdict:
        from PIL import Image

        from vlmagent.policy import Context

        t0 = time.monotonic()
        shots = _pick(ev.shots, self.cfg.images)
        if not shots:
            return Verdict(self.name, None, error="no screenshots to judge")
        try:
            policy = self.policy()
            images = []
            for s in shots:
                im = _first_screen(ev, s)
                seen = policy.seen_size(im.width, im.height, None, self.cfg.max_pixels)
                images.append(im.resize(seen, Image.Resampling.BICUBIC))
            content = [{"type": "image", "image": im} for im in images]
            messages = [{"role": "user", "content": [*content, {"type": "text",
                                                                "text": RUBRIC}]}]
            ids = policy.chat_tokens(messages, add_generation_prompt=True)
            gen = policy.generate([Context(ids, images, "judge")], self.cfg.max_new_tokens,
                                  temperature=0.0)[0]
            raw = gen.text
        except Exception as e:  # a model that cannot load or run is a judge failure
            return Verdict(self.name, None, error=f"{type(e).__name__}: {e}"[:500],
                           attempts=1, seconds=time.monotonic() - t0)
        score = parse_score(raw)
        err = None if score is not None else "no 0-5 score in the model output"
        return Verdict(self.name, score, raw, err, 1, time.monotonic() - t0)


class OpenAIJudge:
    """POST {base_url}/chat/completions with the rubric and base64 PNG screenshots."""

    name = "openai"

    def __init__(self, cfg: OpenAIJudgeConfig,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self._slots = threading.BoundedSemaphore(max(1, cfg.concurrency))
        self._sleep = sleep

    def _body(self, ev: Evidence, shots: list[Shot]) -> bytes:
        from PIL import Image

        content: list[dict[str, Any]] = [{"type": "text", "text": RUBRIC}]
        for s in shots:
            im = _first_screen(ev, s)
            if im.width > self.cfg.image_width:
                h = max(1, round(im.height * self.cfg.image_width / im.width))
                im = im.resize((self.cfg.image_width, h), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, "PNG")
            url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
        return json.dumps({"model": self.cfg.model, "temperature": 0.0,
                           "max_tokens": self.cfg.max_tokens,
                           "messages": [{"role": "user", "content": content}]}).encode()

    def _post(self, body: bytes, timeout: float) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.cfg.base_url.rstrip("/") + "/chat/completions",
                                     data=body, headers=headers, method="POST")
        with self._slots, urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read(4_000_000))
        return str(data["choices"][0]["message"]["content"] or "")

    def __call__(self, ev: Evidence, deadline: float | None = None) -> Verdict:
        t0 = time.monotonic()
        shots = _pick(ev.shots, self.cfg.images)
        if not shots:
            return Verdict(self.name, None, error="no screenshots to judge")
        body = self._body(ev, shots)
        end = deadline if deadline is not None else float("inf")
        error, attempts = "not attempted", 0
        for attempt in range(self.cfg.retries + 1):
            left = end - time.monotonic()
            if left <= 0.05:
                error = f"out of time after {attempts} attempts ({error})"
                break
            attempts += 1
            try:
                raw = self._post(body, min(self.cfg.timeout_s, left))
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}"
                if e.code != 429 and e.code < 500:  # a bad request will not get better
                    break
            except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                error = "timed out" if isinstance(reason, TimeoutError) or "timed out" in str(
                    reason) else f"connection failed: {reason}"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                error = f"malformed response: {type(e).__name__}: {e}"[:300]
                break
            else:
                score = parse_score(raw)
                err = None if score is not None else "no 0-5 score in the model output"
                return Verdict(self.name, score, raw, err, attempts, time.monotonic() - t0)
            if attempt < self.cfg.retries:
                self._sleep(min(self.cfg.backoff_s * 2 ** attempt,
                                max(0.0, end - time.monotonic())))
        return Verdict(self.name, None, error=error, attempts=attempts,
                       seconds=time.monotonic() - t0)

    def judge_many(self, evs: list[Evidence], deadline: float | None = None) -> list[Verdict]:
        """Judge several sites at once, at most cfg.concurrency requests in flight."""
        with ThreadPoolExecutor(max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(lambda ev: self(ev, deadline), evs))


JUDGES: dict[str, Callable[[AestheticsConfig], Any]] = {
    "metrics": lambda cfg: MetricsJudge(),
    "vlm": lambda cfg: VLMJudge(cfg.vlm),
    "openai": lambda cfg: OpenAIJudge(cfg.openai),
}


def build_judge(cfg: AestheticsConfig) -> Any:
    if cfg.judge not in JUDGES:
        raise ValueError(f"unknown aesthetics judge {cfg.judge!r} (valid: {', '.join(JUDGES)})")
    return JUDGES[cfg.judge](cfg)

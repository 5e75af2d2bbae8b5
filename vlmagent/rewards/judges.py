"""Aesthetic judges: one interface, three backends, chosen by reward.aesthetics.judge (or
`vlmagent score --judge`).

    judge = build_judge(cfg.reward.aesthetics)
    verdict = judge(evidence, deadline)     # Verdict(score 0..5 or None, raw, error, seconds)

metrics  the weight-free measures (aesthetics.py computes them; this judge just reports them)
vlm      a local Qwen-VL checkpoint (path or hub id) prompted with RUBRIC on the screenshots
openai   any OpenAI-compatible chat endpoint (vLLM, a hosted API): stdlib http.client with one
         kept-alive connection per thread and host, timeouts, retries with jittered exponential
         backoff that honour a 429/503's Retry-After, and a per-judge concurrency limit

A judge never raises for what a model says or for a server that misbehaves: unparseable output,
HTTP errors and timeouts come back as a Verdict with score None and the reason in `error`.
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import os
import random
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
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
        from vlmagent.images import resize_seen
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
                # the model's own rule (its processor's factor), capped by the judge's budget
                seen = policy.seen_size(im.width, im.height, None, self.cfg.max_pixels)
                images.append(resize_seen(im, seen))
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


JITTER = 0.5  # a backoff wait is stretched by a random factor in [1, 1 + JITTER)
MAX_ANSWER_BYTES = 4_000_000  # a longer answer is malformed (and its connection dropped)
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
          ConnectionAbortedError)  # what a kept connection that the server closed raises
_DELAY = re.compile(r"\d+(?:\.\d+)?")


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """The wait a Retry-After header asks for, in seconds (>= 0): delay-seconds or an HTTP date
    (against `now`, epoch seconds; default the clock). None when absent or unreadable."""
    value = (value or "").strip()
    if _DELAY.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    now_t = time.time() if now is None else now
    return max(0.0, when.timestamp() - now_t)


class _Status(Exception):
    """A non-2xx answer: its code and the Retry-After it carried (seconds, or None)."""

    def __init__(self, code: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {code}")
        self.code, self.retry_after = code, retry_after


class OpenAIJudge:
    """POST {base_url}/chat/completions with the rubric and base64 PNG screenshots.

    Connections: each thread keeps one HTTP/1.1 connection per host and reuses it (keep-alive);
    one the server closed is reopened, and a request that finds its kept connection gone stale
    is sent again at once on a new one (not counted as an attempt). Proxies come from the
    environment, as urllib takes them. Retries, after a timeout, a connection error, 429 or 5xx:
    wait backoff_s * 2**k stretched by up to JITTER (workers that failed together do not retry
    together), or longer when a 429/503 says so in Retry-After; a Retry-After beyond the time
    left before the deadline, or beyond timeout_s, ends the call at once instead.
    """

    name = "openai"

    def __init__(self, cfg: OpenAIJudgeConfig, sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self._slots = threading.BoundedSemaphore(max(1, cfg.concurrency))
        self._sleep = sleep
        self._rand = rand
        self._local = threading.local()  # .conns: this thread's connections, by target

    def backoff(self, attempt: int) -> float:
        """The wait before retry `attempt` (0-based), jitter included."""
        return self.cfg.backoff_s * 2 ** attempt * (1.0 + JITTER * self._rand())

    def _target(self) -> tuple[str, str, int, str, str | None]:
        """(scheme, host, port, request path, proxy URL or None); ValueError for a bad URL."""
        u = urllib.parse.urlsplit(self.cfg.base_url.rstrip("/") + "/chat/completions")
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url {self.cfg.base_url!r} is not an http(s) URL")
        port = u.port or (443 if u.scheme == "https" else 80)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        proxy = urllib.request.getproxies().get(u.scheme)
        if proxy and urllib.request.proxy_bypass(u.hostname):
            proxy = None
        return u.scheme, u.hostname, port, path, proxy

    def _connection(self, target: tuple[str, str, int, str, str | None],
                    timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to the target (made on first use), and whether it holds an
        open socket from an earlier request."""
        conns = self._local.__dict__.setdefault("conns", {})
        scheme, host, port, _, proxy = target
        conn = conns.get(target)
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            if proxy:
                p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
                conn = cls(p.hostname or "", p.port or 80, timeout=timeout)
                if scheme == "https":
                    conn.set_tunnel(host, port)
            else:
                conn = cls(host, port, timeout=timeout)
            conns[target] = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, conn.sock is not None

    def _drop(self, target: tuple[str, str, int, str, str | None]) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(target, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close this thread's connections (they are reopened on the next call)."""
        for target in list(self._local.__dict__.get("conns", {})):
            self._drop(target)

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
        """The answer's text; _Status for a non-2xx answer, OSError or HTTPException for a
        connection that failed, ValueError and friends for an answer that is not the API's."""
        target = self._target()
        scheme, host, port, path, proxy = target
        if proxy and scheme == "http":  # a plain HTTP proxy takes the absolute URL
            path = f"http://{host}:{port}{path}"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        with self._slots:
            for fresh in (False, True):
                conn, kept = self._connection(target, timeout)
                try:
                    conn.request("POST", path, body, headers)
                    resp = conn.getresponse()
                    data = resp.read(MAX_ANSWER_BYTES + 1)
                    if len(data) <= MAX_ANSWER_BYTES and not resp.isclosed():
                        resp.read()  # the end of a chunked body: the connection stays usable
                except _STALE:
                    self._drop(target)
                    if kept and not fresh:  # the server closed it while it was idle: reopen
                        continue
                    raise
                except BaseException:
                    self._drop(target)  # a timeout or a broken answer: its state is unknown
                    raise
                break
        if len(data) > MAX_ANSWER_BYTES:
            self._drop(target)
        if not 200 <= resp.status < 300:
            raise _Status(resp.status, retry_after_s(resp.getheader("Retry-After")))
        if len(data) > MAX_ANSWER_BYTES:
            raise ValueError(f"answer longer than {MAX_ANSWER_BYTES} bytes")
        payload = json.loads(data)
        return str(payload["choices"][0]["message"]["content"] or "")

    def __call__(self, ev: Evidence, deadline: float | None = None) -> Verdict:
        t0 = time.monotonic()
        shots = _pick(ev.shots, self.cfg.images)
        if not shots:
            return Verdict(self.name, None, error="no screenshots to judge")
        try:
            self._target()
        except ValueError as e:
            return Verdict(self.name, None, error=str(e))
        body = self._body(ev, shots)
        end = deadline if deadline is not None else float("inf")
        error, attempts = "not attempted", 0
        for attempt in range(self.cfg.retries + 1):
            left = end - time.monotonic()
            if left <= 0.05:
                error = f"out of time after {attempts} attempts ({error})"
                break
            attempts += 1
            retry_after = None
            try:
                raw = self._post(body, min(self.cfg.timeout_s, left))
            except _Status as e:
                error = f"HTTP {e.code}"
                if e.code != 429 and e.code < 500:  # a bad request will not get better
                    break
                if e.code in (429, 503):
                    retry_after = e.retry_after
            except (OSError, http.client.HTTPException) as e:  # TimeoutError is an OSError
                error = "timed out" if isinstance(e, TimeoutError) or "timed out" in str(e) \
                    else f"connection failed: {e or type(e).__name__}"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                error = f"malformed response: {type(e).__name__}: {e}"[:300]
                break
            else:
                score = parse_score(raw)
                err = None if score is not None else "no 0-5 score in the model output"
                return Verdict(self.name, score, raw, err, attempts, time.monotonic() - t0)
            if attempt < self.cfg.retries:
                wait = self.backoff(attempt)
                if retry_after is not None:
                    may_wait = min(end - time.monotonic(), self.cfg.timeout_s)
                    if retry_after > may_wait:  # the server will not answer in time
                        error += (f" (Retry-After {retry_after:.1f} s; this call may wait "
                                  f"{max(0.0, may_wait):.1f} s more)")
                        break
                    wait = max(wait, retry_after)
                self._sleep(min(wait, max(0.0, end - time.monotonic())))
        return Verdict(self.name, None, error=error, attempts=attempts,
                       seconds=time.monotonic() - t0)


JUDGES: dict[str, Callable[[AestheticsConfig], Any]] = {
    "metrics": lambda cfg: MetricsJudge(),
    "vlm": lambda cfg: VLMJudge(cfg.vlm),
    "openai": lambda cfg: OpenAIJudge(cfg.openai),
}


def build_judge(cfg: AestheticsConfig) -> Any:
    if cfg.judge not in JUDGES:
        raise ValueError(f"unknown aesthetics judge {cfg.judge!r} (valid: {', '.join(JUDGES)})")
    return JUDGES[cfg.judge](cfg)

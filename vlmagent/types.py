"""Types that cross module boundaries. Plain dataclasses, JSON-friendly, no torch.

Later issues extend the agent/training types; the reward and browser types are used now.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


# ---------------------------------------------------------------- agent side (issue 3 fills in)
@dataclass
class Sample:
    """One task instance: a prompt, its images (by name -> file path) and the reference answer."""

    id: str
    prompt: str
    images: dict[str, str] = field(default_factory=dict)
    answer: Any = None
    domain: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    raw: str = ""


@dataclass
class ToolResult:
    """What a tool hands back. `error` is text the model reads; tools never raise for bad input."""

    text: str = ""
    images: list[Any] = field(default_factory=list)  # PIL images in memory; file paths once saved
    error: str | None = None


@dataclass
class Turn:
    role: str  # "system" | "user" | "assistant" | "tool"
    text: str
    images: list[str] = field(default_factory=list)  # indices into Trajectory.images, as names
    tool_call: ToolCall | None = None
    error: str | None = None
    span: tuple[int, int] = (0, 0)  # [start, end) of this turn's tokens in Trajectory.token_ids


@dataclass
class Trajectory:
    """One episode exactly as sampled: what training consumes without re-tokenising anything.

    `images` are the images the model saw, at the size it saw them, in the order of their
    <|image_pad|> runs in token_ids (PIL images in memory; file paths once saved).
    `logps` has one entry per token with loss_mask 1 (None for scripted, tokenised episodes).
    """

    id: str
    sample_id: str = ""
    turns: list[Turn] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    image_levels: list[int] = field(default_factory=list)  # the router's level per image
    mode: str | None = None  # "tool" | "text" | None: the mode tag the policy opened with
    forced_mode: str | None = None  # the mode hinted in the prompt, if any
    mode_matched: bool | None = None  # behaviour agreed with the tag (and the forced mode)
    answer: str | None = None
    finish: str = ""  # "answer" | "max_turns" | "budget"
    n_tool_calls: int = 0
    n_tool_errors: int = 0
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logps: list[float] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reward: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TermScore:
    """One named term of an episode's reward: what it adds to the total (weight applied)."""

    name: str  # answer | format | tool_quality | tool_bonus | mode | resolution
    value: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpisodeReward:
    """An agent episode's reward: the sum of its terms, scored on the final assistant answer.
    `accuracy` is the domain's check alone (the answer term), reported apart from the reward."""

    reward: float
    accuracy: float
    answer: str | None  # the parsed final answer (None: no <answer> tag)
    terms: list[TermScore] = field(default_factory=list)

    def values(self) -> dict[str, float]:
        return {t.name: t.value for t in self.terms}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- browser -> rewards
@dataclass
class Interaction:
    """One click or form submission and whether it visibly did anything."""

    kind: str  # "click" | "form"
    target: str  # short selector-like description, e.g. "button#buy 'Buy now'"
    changed: bool  # DOM mutated, URL changed, or a navigation happened
    navigated_to: str | None = None
    error: str | None = None
    status: int | None = None  # HTTP status where it navigated (405: a POST to a static site)


@dataclass
class PageVisit:
    """Everything observed while driving one page of a site in the sandboxed browser.

    URLs are site-relative paths ("/about.html"), never host paths. Screenshot paths are
    wherever the caller asked the browser to write them.
    """

    path: str
    status: int | None = None  # HTTP status of the main document; None if it never loaded
    load_error: str | None = None
    load_seconds: float = 0.0
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    failed_requests: list[str] = field(default_factory=list)  # network failures on the site server
    http_errors: list[str] = field(default_factory=list)  # "404 /missing.png"
    blank: bool | None = None  # desktop screenshot shows nothing (near-uniform pixels)
    visible_text_chars: int = 0
    dom_nodes: int = 0
    internal_links: list[str] = field(default_factory=list)  # site paths linked from this page
    interactions: list[Interaction] = field(default_factory=list)
    mobile_overflow_px: int | None = None  # scrollWidth - innerWidth at the mobile width
    viewport_meta: bool | None = None
    screenshot_desktop: str | None = None
    screenshot_mobile: str | None = None
    crashed: bool = False
    timed_out: bool = False
    dom: dict[str, Any] = field(default_factory=dict)  # DOM measures for later stages
    # viewport -> result of a later stage's in-page script (aesthetics), taken during this visit
    # so that stage need not load the page again; not part of the execution stage's details
    measures: dict[str, Any] = field(default_factory=dict)


@dataclass
class SiteVisit:
    """A whole site driven from index.html: the pages visited and site-level findings."""

    pages: list[PageVisit] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)  # "GET https://cdn.example/x.js"
    # answered from the offline CDN mirror (web/cdn.py): "GET https://unpkg.com/... -> react@18.3.1"
    mirrored_requests: list[str] = field(default_factory=list)
    # main-frame navigations to other sites (a form posted to an external service), not followed
    left_site: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)  # "/index.html -> /nope.html"
    dialogs: int = 0
    popups: int = 0
    seconds: float = 0.0
    error: str | None = None  # browser-level failure (crash, budget exhausted)


# ---------------------------------------------------------------- rewards
@dataclass
class StageScore:
    name: str
    score: float  # in [0, 1]
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RewardResult:
    """The cascade's verdict on one item: total reward plus every stage that ran, in order."""

    reward: float
    stages: list[StageScore] = field(default_factory=list)
    content_hash: str = ""
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False

    @property
    def passed_stages(self) -> int:
        return sum(1 for _ in _prefix(self.stages))

    def to_dict(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "stages": [s.to_dict() for s in self.stages],
            "content_hash": self.content_hash,
            "error": self.error,
            "seconds": self.seconds,
        }


def _prefix(stages: list[StageScore]):
    for s in stages:
        if not s.passed:
            return
        yield s

"""The reward of an agent episode: named terms scored on the FINAL ASSISTANT ANSWER.

Every consumer (online RL, preference pairs, held-out evaluation, the debugger, `vlmagent
rollout`) scores episodes here, so they agree on what was answered and what it earned:

    answer        the domain's check of the last assistant turn (1.0 right, 0.0 wrong): the
                  accuracy, also reported on its own
    format        format_weight x the DriveAgent-R1 format score of the assistant text
    tool_quality  tool_quality_weight x the mean DriveAgent-R1 quality of the episode's calls
    tool_bonus    tool_bonus when the answer is right AND at least one tool was called
                  (DeepEyes: conditional, so the policy is not taught to "always zoom")
    mode          -MODE_PENALTY when a forced-mode episode contradicts its forced mode, plus the
                  DriveAgent-R1 adaptive mode reward of its group (stages with adaptive_mode)

    reward = answer + format + tool_quality + tool_bonus + mode

The last assistant turn is scored, never `turns[-1]`: when the token budget closes an episode
right after a tool turn, the last turn is the tool's result, not anything the policy said.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlmagent.config import Config, StageConfig, resolve_stage
from vlmagent.protocol import THINK_TAGS, ParseError, parse_answer, stage_tags
from vlmagent.tools.base import Tool
from vlmagent.types import EpisodeReward, Sample, TermScore, ToolCall, ToolResult, Trajectory

MODE_PENALTY = 0.2  # a forced-mode episode that contradicts its forced mode (DriveAgent-R1)
CALL_COST = 0.125  # adaptive mode reward: cost of each tool call (DriveAgent-R1)


class Checker(Protocol):
    """What the episode reward needs of a domain: its answer check. A domain with a graded
    answer (driving: DriveAgent-R1's edit-similarity reward) also has `answer(text, sample) ->
    Answer`; one whose answers are scored in batch (webgen: a website cascade in worker
    processes) has `score_answers(texts, samples) -> list[Answer]`. A domain whose answer sits
    in another tag than <answer> names it in ANSWER_TAG (driving: "meta actions")."""

    def check(self, answer_text: str, sample: Sample) -> float: ...


@dataclass(frozen=True)
class Answer:
    """The answer term of one episode: its value, the accuracy reported for it (the same for a
    right/wrong check; webgen: value = the cascade reward, accuracy = functional success) and
    details kept with the reward (webgen: the cascade's result line)."""

    value: float
    accuracy: float
    details: dict[str, Any] = field(default_factory=dict)


def score_answers(domain: Checker, texts: Sequence[str], samples: Sequence[Sample],
                  cfg: Config | None = None) -> list[Answer]:
    """The answer term of each final text: the domain's batch scorer (with the run's config:
    its reward stages, browser and scoring settings), or its check."""
    batch = getattr(domain, "score_answers", None)
    if batch is not None:
        return list(batch(texts, samples, cfg=cfg))
    graded = getattr(domain, "answer", None)
    if graded is not None:
        return [graded(x, s) for x, s in zip(texts, samples, strict=True)]
    out = []
    for x, s in zip(texts, samples, strict=True):
        a = float(domain.check(x, s))
        out.append(Answer(a, a))
    return out


@dataclass(frozen=True)
class RewardTerms:
    """Which terms an episode's reward has, and their weights (from a training stage).

    The answer term and the forced-mode penalty are always on; the others are off at 0/False.
    """

    tool_bonus: float = 0.0
    format_weight: float = 0.0
    tool_quality_weight: float = 0.0
    adaptive_mode: bool = False
    resolution_penalty: float = 0.0  # VisionThink's self-routing penalty (0.1 in the paper)
    resolution_threshold: float = 0.2  # below this share of right direct answers: ask

    @classmethod
    def from_stage(cls, stage: StageConfig) -> RewardTerms:
        """The terms of a resolved stage (config keys tool_bonus, format_weight,
        tool_quality_weight, adaptive_mode)."""
        return cls(tool_bonus=float(stage.tool_bonus or 0.0),
                   format_weight=float(stage.format_weight or 0.0),
                   tool_quality_weight=float(stage.tool_quality_weight or 0.0),
                   adaptive_mode=bool(stage.adaptive_mode),
                   resolution_penalty=float(stage.resolution_penalty or 0.0),
                   resolution_threshold=float(stage.resolution_threshold
                                              if stage.resolution_threshold is not None
                                              else LOW_RIGHT))

    @classmethod
    def from_config(cls, cfg: Config) -> RewardTerms:
        """The terms of `train.defaults` (for rollouts and the debugger, outside any stage)."""
        return cls.from_stage(resolve_stage(cfg.train.defaults, StageConfig()))


# ---------------------------------------------------------------- what is scored
def final_text(traj: Trajectory) -> str:
    """The last assistant turn's text ("" when the policy never wrote one)."""
    return next((t.text for t in reversed(traj.turns) if t.role == "assistant"), "")


def assistant_text(traj: Trajectory) -> str:
    """Everything the policy wrote, its turns joined (a mode block spans the tool turns)."""
    return "\n".join(t.text for t in traj.turns if t.role == "assistant")


# ---------------------------------------------------------------- per-term scores
def call_quality(call: ToolCall | ParseError | None, tools: Mapping[str, Tool],
                 result: ToolResult) -> float:
    """DriveAgent-R1 per-call quality: 0.2 parsed + 0.2 exists + 0.2 args valid + 0.4 ran ok.

    Each part needs the previous ones (arguments cannot be valid for a tool that does not exist).
    The agent records it per call in traj.meta["call_quality"] (only it knows the tools).
    """
    if not isinstance(call, ToolCall):
        return 0.0
    if call.name not in tools:
        return 0.2
    try:
        if tools[call.name].check(call.arguments):
            return 0.4
    except Exception:
        return 0.4
    return 0.6 if result.error else 1.0


def answer_tag(domain: Any) -> str:
    """The tag a domain's final answer sits in (<answer> unless the domain says otherwise)."""
    return getattr(domain, "ANSWER_TAG", "answer")


def format_score(text: str, tag: str = "answer") -> float:
    """DriveAgent-R1 format score in [0, 1] of the assistant text: 0 unless it is one mode
    block followed by the answer tag (<answer>, driving: <meta actions>) and nothing else;
    then 0.4, +0.2 for each stage tag (description, reasoning, prediction) inside the block,
    and 1.0 only with all three in that order (all three out of order: 0.8)."""
    t = re.escape(tag)
    m = re.fullmatch(rf"\s*<(think_with_tools|think_no_tools)>(.*)</\1>\s*<{t}>.*?</{t}>\s*",
                     text, flags=re.S)
    if m is None:
        return 0.0
    tags = stage_tags(m.group(2))
    if len(tags) == len(THINK_TAGS):
        return 1.0 if tags == list(THINK_TAGS) else 0.8
    return 0.4 + 0.2 * len(tags)


def mean_quality(traj: Trajectory) -> float:
    """Mean call quality of the episode's calls; 0.0 without calls."""
    q = traj.meta.get("call_quality") or [0.0]
    return sum(q) / len(q)


def mode_rewards(group: Sequence[Trajectory], accuracy: Sequence[float]) -> list[float]:
    """DriveAgent-R1's adaptive mode reward for one group, each in [-0.2, 0.2]: -0.2 for a
    missing tag or behaviour that contradicts it; for tool-mode episodes
    d = acc - mean acc of the group's no-tool episodes - 0.125 * calls, times the mean call
    quality when positive."""
    text_acc = [a for t, a in zip(group, accuracy) if t.mode == "text"]
    base = sum(text_acc) / len(text_acc) if text_acc else 0.0
    out = []
    for t, acc in zip(group, accuracy):
        if t.mode is None or not t.mode_matched:
            out.append(-MODE_PENALTY)
            continue
        if t.mode != "tool":
            out.append(0.0)
            continue
        d = acc - base - CALL_COST * t.n_tool_calls
        d = d * mean_quality(t) if d > 0 else d
        out.append(max(-MODE_PENALTY, min(MODE_PENALTY, d)))
    return out


FULL_RES_TOOL = "full_resolution"  # tools/views.py: the self-routing request
LOW_RIGHT = 0.2  # VisionThink: below this share of right direct answers, asking is right


def asked_full(traj: Trajectory) -> bool:
    return any(t.tool_call is not None and t.tool_call.name == FULL_RES_TOOL
               for t in traj.turns)


def resolution_penalties(group: Sequence[Trajectory], accuracy: Sequence[float],
                         penalty: float, threshold: float = LOW_RIGHT) -> list[float]:
    """VisionThink's term for one group: -penalty for answering from the low-resolution image
    when fewer than `threshold` (20%) of the group's direct answers were right (the image
    needed the full budget), else -penalty for asking for it. Without it the policy learns to
    always ask; penalising every request teaches it never to. With a few answer classes,
    chance alone can pass 20% (4 colours: 25%): set the threshold above chance."""
    direct = [a for t, a in zip(group, accuracy) if not asked_full(t)]
    low_right = sum(direct) / len(direct) if direct else 0.0
    need_full = low_right < threshold
    return [-penalty if asked_full(t) != need_full else 0.0 for t in group]


# ---------------------------------------------------------------- the reward
def score_episodes(trajs: Sequence[Trajectory], samples: Sequence[Sample], terms: RewardTerms,
                   domain: Checker, group_size: int = 1,
                   answers: Sequence[Answer] | None = None, cfg: Config | None = None
                   ) -> list[EpisodeReward]:
    """The reward of every episode (samples[i] is trajs[i]'s sample). Groups are runs of
    `group_size` consecutive episodes of one prompt (the adaptive mode term compares them).
    `answers`: answer terms scored already (online webgen scores them while generating);
    `cfg`: the config a batch-scored domain's reward uses (webgen: reward, browser, score)."""
    if len(trajs) != len(samples):
        raise ValueError(f"{len(trajs)} episodes but {len(samples)} samples")
    if group_size < 1 or len(trajs) % group_size:
        raise ValueError(f"{len(trajs)} episodes do not split into groups of {group_size}")
    texts = [final_text(t) for t in trajs]
    if answers is None:
        answers = score_answers(domain, texts, samples, cfg)
    if len(answers) != len(trajs):
        raise ValueError(f"{len(trajs)} episodes but {len(answers)} answers")
    acc = [a.accuracy for a in answers]
    adaptive = [0.0] * len(trajs)
    if terms.adaptive_mode:
        for i in range(0, len(trajs), group_size):
            adaptive[i:i + group_size] = mode_rewards(trajs[i:i + group_size],
                                                      acc[i:i + group_size])
    res = [0.0] * len(trajs)
    if terms.resolution_penalty:
        for i in range(0, len(trajs), group_size):
            res[i:i + group_size] = resolution_penalties(
                trajs[i:i + group_size], acc[i:i + group_size], terms.resolution_penalty,
                terms.resolution_threshold)
    out = []
    tag = answer_tag(domain)
    for t, s, text, ans, ad, rp in zip(trajs, samples, texts, answers, adaptive, res):
        a = ans.value
        fmt = format_score(assistant_text(t), tag)
        quality = t.meta.get("call_quality") or []
        forced = -MODE_PENALTY if t.forced_mode and not t.mode_matched else 0.0
        bonus = terms.tool_bonus if ans.accuracy > 0 and t.n_tool_calls > 0 else 0.0
        answer = parse_answer(text, tag)
        parts = [
            TermScore("answer", a, {"answer": answer, "expected": str(s.answer), **ans.details}),
            TermScore("format", terms.format_weight * fmt, {"score": fmt}),
            TermScore("tool_quality", terms.tool_quality_weight * mean_quality(t),
                      {"calls": list(quality)}),
            TermScore("tool_bonus", bonus, {"tool_calls": t.n_tool_calls}),
            TermScore("mode", forced + ad, {"forced": forced, "adaptive": ad,
                                            "mode": t.mode, "matched": t.mode_matched}),
            TermScore("resolution", rp, {"asked_full": asked_full(t)}),
        ]
        # summed in this order, the mode term's two parts last, so that rewards equal those
        # of the code this replaced bit for bit (group advantages see no rounding change)
        total = a + parts[1].value + parts[2].value + bonus + forced + ad + rp
        out.append(EpisodeReward(total, ans.accuracy, answer, parts))
    return out


def record(trajs: Sequence[Trajectory], rewards: Sequence[EpisodeReward]) -> None:
    """Write each reward onto its trajectory: `reward`, meta accuracy and per-term values
    (saved with the trajectory, so a file of episodes says what each earned and why)."""
    for t, r in zip(trajs, rewards, strict=True):
        t.reward = r.reward
        t.meta["accuracy"] = r.accuracy
        t.meta["reward_terms"] = r.values()
        brief = r.terms[0].details.get("brief") if r.terms else None
        if brief is not None:  # webgen: what the cascade made of the project, and why
            t.meta["web"] = brief


def summary(trajs: Sequence[Trajectory], rewards: Sequence[EpisodeReward]) -> dict[str, Any]:
    """Mean reward, accuracy and tool-call rate of a batch of episodes, and how they chose a
    mode: the share that opened <think_with_tools>, and the share whose behaviour matched the
    mode they opened (calls in tool mode, none in text mode)."""
    n = max(1, len(rewards))
    return {"accuracy": sum(r.accuracy for r in rewards) / n,
            "reward": sum(r.reward for r in rewards) / n,
            "tool_call_rate": sum(t.n_tool_calls > 0 for t in trajs) / n,
            "tool_mode_rate": sum(t.mode == "tool" for t in trajs) / n,
            "mode_matched": sum(bool(t.mode_matched) for t in trajs) / n}

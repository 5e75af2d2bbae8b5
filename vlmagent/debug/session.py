"""The debugger's step logic: one episode, advanced one assistant turn at a time.

Pure Python (no HTTP), so tests drive it directly. The episode is the agent loop's own
`Episode`, advanced by `agent.step` (the same parse -> dispatch -> tool turn code as rollouts).
The session remembers every assistant turn it applied (`entries`); editing turn k rebuilds the
episode from the prompt plus entries[:k] and then applies the edited turn. Tools are pure
functions of their inputs, so a rebuild reproduces the earlier turns exactly (tokens, images).

Without a model (manual mode), `BudgetPolicy` stands in for the policy: the agent loop runs on
text alone, images are sized with the named Qwen2.5-VL default factor
(images.QWEN2_5_VL_DEFAULT) under the config's pixel budget, and no tokens exist (the page
says so). Samples come from debug/samples.py; the score is the episode reward every training
consumer uses (rewards/episode.py).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vlmagent import agent, protocol, trajectory
from vlmagent.config import Config
from vlmagent.debug.samples import DebugError, domain_sample, shipped_sample, upload_sample
from vlmagent.domains import DOMAINS, get_domain
from vlmagent.images import QWEN2_5_VL_DEFAULT, Budget, ImageCache, Size
from vlmagent.policy import Generation
from vlmagent.rewards.episode import RewardTerms, score_episodes
from vlmagent.tools import make_tools
from vlmagent.train.data import dataset_args
from vlmagent.types import Sample, ToolCall, Trajectory


class _NoTokenizer:
    """What the agent loop asks of a tokenizer, answered with no tokens."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": []}

    def apply_chat_template(self, messages: Any, tools: Any = None, tokenize: bool = False,
                            **kw: Any) -> str:
        return ""  # the same with and without tools: the agent writes the tool prompt itself


class BudgetPolicy:
    """Stands in for `Policy` when no model is loaded: seen sizes and tokens per image come from
    `budget` (images.py's rule) under the config's pixel bounds; no token ids.

    With no processor to ask, the factor is the named Qwen2.5-VL default (28 px per visual
    token); pass Budget.from_processor(...) to mimic another model without loading it."""

    tokenizer = _NoTokenizer()

    def __init__(self, budget: Budget = QWEN2_5_VL_DEFAULT) -> None:
        self.budget = budget

    @property
    def patch_factor(self) -> int:
        return self.budget.factor

    def seen_size(self, w: int, h: int, min_pixels: int | None = None,
                  max_pixels: int | None = None) -> Size:
        return self.budget.with_pixels(min_pixels, max_pixels).seen_size(w, h)

    def tokens_per_image(self, size: Size) -> int:
        return self.budget.tokens(size)

    def chat_tokens(self, messages: Any, tools: Any = None, add_generation_prompt: bool = False,
                    continuation: bool = False) -> list[int]:
        return []

    def decode(self, ids: list[int]) -> str:
        return ""


@dataclass
class Entry:
    """One assistant turn as applied: its generation and where it came from."""

    gen: Generation
    source: str  # "model" (sampled), "manual" (typed) or "edited" (a call changed in the page)


class Session:
    """One debugging session: a sample, a policy (model or manual) and the episode so far."""

    def __init__(self, cfg: Config | None = None, policy: Any = None, manual: bool = True,
                 policy_path: str = "") -> None:
        self.cfg = cfg or Config()
        self.acfg = self.cfg.agent
        self.fmt = protocol.get_format(self.acfg.format)
        self.tools = make_tools(self.acfg.tools)
        self.policy = policy if policy is not None else BudgetPolicy()
        self.policy_path = policy_path
        self.manual = manual or policy is None
        # generated samples live here; removed with the session (or at exit)
        self._tmp = tempfile.TemporaryDirectory(prefix="vlmagent-debug-")
        self.workdir = Path(self._tmp.name)
        self.cache = ImageCache(max_bytes=512 << 20)
        self.sample: Sample | None = None
        self.entries: list[Entry] = []
        self.episode: agent.Episode | None = None
        self.score: dict[str, Any] | None = None
        self.replay: list[Trajectory] = []
        self.replay_path = ""
        self.notes: list[str] = []  # what the domain warned about the loaded sample

    # ------------------------------------------------------------ policy
    @property
    def tokenized(self) -> bool:
        """Whether a real tokenizer/processor is loaded (exact tokens, token-level mask)."""
        return not isinstance(self.policy, BudgetPolicy)

    def seen_size(self, w: int, h: int) -> tuple[int, int]:
        return self.policy.seen_size(w, h, self.acfg.min_pixels, self.acfg.max_pixels)

    def set_policy(self, mode: str, path: str = "") -> None:
        """`manual` (a path, if given, supplies the tokenizer) or `model` (samples from path).

        Turns typed so far are kept as text and re-tokenised for the new tokenizer; sampled
        turns become edited ones (their token ids belong to the old tokenizer)."""
        if mode not in ("manual", "model"):
            raise DebugError(f"unknown policy mode {mode!r} (valid: manual, model)")
        path = path.strip()
        if mode == "model" and not path:
            raise DebugError("the model policy needs a model folder (or hub id in the cache)")
        policy = BudgetPolicy()
        if path and path != self.policy_path:
            policy = self._load_policy(path)
        elif path:
            policy = self.policy
        texts = [e.gen.text for e in self.entries]
        self.policy, self.policy_path, self.manual = policy, path, mode == "manual"
        self.entries = []
        self._restart()
        for text in texts:
            self._apply(self._scripted(text), "edited")

    def _load_policy(self, path: str) -> Any:
        from vlmagent.policy import Policy

        try:
            return Policy.from_pretrained(path, self.cfg.policy.dtype, self.cfg.policy.device,
                                          adapter=self.cfg.policy.adapter)
        except Exception as e:  # any loader failure is a readable message, not a crash
            raise DebugError(f"could not load a model from {path!r}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None

    # ------------------------------------------------------------ samples
    def load_sample(self, sample: Sample) -> None:
        """Start a fresh episode on `sample` (images decoded once, through the cache)."""
        try:
            images = {k: self.cache.get(v) for k, v in sample.images.items()}
        except (OSError, ValueError) as e:
            raise DebugError(f"cannot read the sample's images: {e}") from None
        self.sample = replace(sample, images=images)
        self.notes = []
        self.entries = []
        self._restart()

    def load_shipped(self) -> None:
        self.load_sample(shipped_sample())

    def load_domain(self, name: str, seed: Any, kind: str = "") -> None:
        """A generated sample of domain `name` (zoomqa, zoomgrid) from `seed`."""
        sample, notes = domain_sample(name, seed, kind, self.cfg.domain.kinds, self.workdir,
                                      self.seen_size, dataset_args(self.cfg))
        self.load_sample(sample)
        self.notes = notes

    def load_upload(self, data: bytes, question: str, answer: str = "") -> None:
        """An uploaded image and question; `answer` (optional) makes the episode scorable."""
        self.load_sample(upload_sample(data, question, answer))

    # ------------------------------------------------------------ stepping
    def _need_episode(self) -> agent.Episode:
        if self.episode is None:
            raise DebugError("load a sample first")
        return self.episode

    def _restart(self) -> None:
        self.score = None
        self.episode = None
        if self.sample is None:
            return
        self.episode = agent.start_episode(self.policy, self.sample, self.acfg, self.tools)

    def _rebuild(self, entries: list[Entry]) -> None:
        """The episode from the prompt plus `entries` (exact: tools are deterministic)."""
        self._restart()
        self.entries = []
        for e in entries:
            self._apply(e.gen, e.source)

    def _apply(self, gen: Generation, source: str) -> None:
        ep = self._need_episode()
        if agent.budget_spent(ep, self.acfg):
            raise DebugError(f"the episode is over ({ep.traj.finish}); edit an earlier turn or "
                             "load a sample to start again")
        before = list(self.entries)
        try:
            agent.step(self.policy, ep, gen, self.acfg, self.tools)
        except Exception as e:  # e.g. the model rejects the context: undo, keep the session
            self._rebuild(before)
            raise DebugError(f"the turn could not be applied: {type(e).__name__}: {e}") from None
        self.entries.append(Entry(gen, source))
        self.score = None

    def _scripted(self, text: str) -> Generation:
        """A typed turn as the agent's ScriptedActor tokenises expert turns."""
        stop = self.fmt.stop
        if not self.tokenized:
            return Generation([], [], text, stop if text.rstrip().endswith(stop) else "eos")
        texts = [e.gen.text for e in self.entries] + [text]
        actor = agent.ScriptedActor(self.policy, lambda ep: texts)
        [gen] = actor([self._need_episode()], self.acfg, stop, None)
        return gen

    def step(self, text: str | None = None, seed: int | None = None) -> None:
        """One assistant turn: `text` typed by the person (manual), else sampled from the model."""
        ep = self._need_episode()
        if ep.done:
            raise DebugError(f"the episode is over ({ep.traj.finish}); edit an earlier turn or "
                             "load a sample to start again")
        if text is not None and not isinstance(text, str):
            raise DebugError("the assistant turn must be text")
        if self.manual or text is not None:
            if not text or not text.strip():
                raise DebugError("write the assistant turn first (for example a tool call)")
            self._apply(self._scripted(text), "manual")
            return
        if agent.budget_spent(ep, self.acfg):
            return
        try:
            [gen] = agent.PolicyActor(self.policy)([ep], self.acfg, self.fmt.stop, seed)
        except Exception as e:  # e.g. an image/token invariant: say so, keep the session
            raise DebugError(f"the model could not generate: {type(e).__name__}: {e}") from None
        self._apply(gen, "model")

    def run(self, seed: int | None = None) -> None:
        """Sample turns until the episode ends (model policy only)."""
        if self.manual:
            raise DebugError("the manual policy has no model to run: write the next turn")
        for i in range(self.acfg.max_turns + 1):
            if self._need_episode().done:
                return
            self.step(seed=None if seed is None else seed + i)

    def rerun(self, turn: int, call: str | None = None, seed: int | None = None) -> None:
        """Re-run from assistant turn `turn` (0-based): with `call` (JSON {"name", "arguments"})
        that turn's tool call is replaced; turns after it are dropped, then re-sampled (model)
        or left for the person to write (manual)."""
        if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < len(
                self.entries):
            raise DebugError(f"no assistant turn {turn!r} to re-run (turns 0 to "
                             f"{len(self.entries) - 1})")
        edited = None
        if call is not None:
            new = parse_call_json(call)
            old = self.entries[turn].gen.text
            cut = old.rfind(self.fmt.start)
            edited = (old[:cut] if cut >= 0 else old) + self.fmt.render_call(new)
        keep = self.entries[:turn]
        self._rebuild(keep)
        if edited is not None:
            self._apply(self._scripted(edited), "edited")
        if not self.manual:
            self.run(seed)

    # ------------------------------------------------------------ results
    def trajectory(self) -> Trajectory:
        """The episode as a Trajectory (logps only when every turn was sampled)."""
        ep = self._need_episode()
        t = ep.traj
        sampled = self.tokenized and all(e.source == "model" for e in self.entries)
        t.logps = list(ep.logps) if sampled else None
        t.meta["debug_sources"] = [e.source for e in self.entries]
        return t

    def score_answer(self) -> dict[str, Any]:
        """The episode reward (rewards/episode.py, the terms of train.defaults) of the episode
        so far: its final assistant answer checked by the sample's domain (an upload: the
        configured domain's check)."""
        ep = self._need_episode()
        s = self.sample
        if not any(t.role == "assistant" for t in ep.traj.turns):
            raise DebugError("nothing to score yet: the policy has not written a turn")
        name = s.domain if s is not None and s.domain in DOMAINS else self.cfg.domain.name
        graded = hasattr(get_domain(name), "score_answers")  # webgen: no reference, a cascade
        if s is None or (s.answer is None and not graded):
            raise DebugError("this sample has no reference answer (give one with the upload)")
        agent.budget_spent(ep, self.acfg)  # no room for another turn: it is over, close it
        [r] = score_episodes([ep.traj], [s], RewardTerms.from_config(self.cfg),
                             get_domain(name), cfg=self.cfg)
        self.score = {"reward": r.reward, "accuracy": r.accuracy, "answer": r.answer,
                      "expected": str(s.answer), "check": f"{name}.check", "terms": r.values()}
        ep.traj.reward = r.reward
        return self.score

    def save(self, path: str) -> Path:
        if not path or not str(path).strip():
            raise DebugError("give a file name for the trajectory (e.g. out/debug.jsonl)")
        try:
            trajectory.save([self.trajectory()], path)
        except OSError as e:
            raise DebugError(f"cannot write {path}: {e.strerror or e}") from None
        return Path(path)

    def open_replay(self, path: str) -> None:
        """Load a saved trajectory file (vlmagent.trajectory.save) to replay its episodes."""
        p = Path(str(path).strip())
        if not p.is_file():
            raise DebugError(f"no trajectory file at {str(path)!r}")
        try:
            trajs = trajectory.load(p)
        except Exception as e:  # wrong JSON, missing fields, missing images: not a trajectory
            raise DebugError(f"{p.name} is not a trajectory file: {type(e).__name__}: "
                             f"{str(e)[:200]}") from None
        if not trajs:
            raise DebugError(f"{p.name} holds no episodes")
        self.replay, self.replay_path = trajs, str(p)


def parse_call_json(text: str) -> ToolCall:
    """A call edited in the page: {"name": ..., "arguments": {...}}; readable errors."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DebugError(f"the call is not valid JSON: {e.msg} at line {e.lineno} column "
                         f"{e.colno}") from None
    if not isinstance(obj, dict):
        raise DebugError('the call must be a JSON object {"name": ..., "arguments": {...}}')
    name, args = obj.get("name"), obj.get("arguments", {})
    if not isinstance(name, str) or not name.strip():
        raise DebugError('the call needs a non-empty "name" string')
    if not isinstance(args, dict):
        raise DebugError('"arguments" must be a JSON object')
    extra = sorted(set(obj) - {"name", "arguments"})
    if extra:
        raise DebugError(f"unexpected key {extra[0]!r} in the call (only name, arguments)")
    return ToolCall(name.strip(), args)

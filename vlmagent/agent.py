"""The multi-turn rollout loop: generate, parse the call, run the tool, show its image, repeat.

One loop serves training rollouts, evaluation, the expert (scripted) episodes and the debugger.
Every episode is built as exact tokens as it goes, so training never re-tokenises text:

    prompt (system + user turn with images)            mask 0
    assistant turn: sampled tokens                     mask 1, sampled logps
      - ends with eos (<|im_end|>): the turn is closed; no call -> the episode is over
      - ends with the format's stop string (a call): "<|im_end|>\\n" is appended, mask 0
    tool result turn (text + the tool's images)        mask 0
    ... until an answer, max_turns, or the token budget.

Images are shown at the size the model sees (policy.seen_size: images.py's rule with the
processor's factor, under the config's pixel budget), and the tools get that size with the
original pixels, so a crop box in the seen frame maps back exactly.
Episodes are batched: every round, all unfinished episodes generate together.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol

from PIL import Image

from vlmagent import protocol
from vlmagent.config import AgentConfig
from vlmagent.episode import Episode, append, finish, seen_image
from vlmagent.images import ImageCache
from vlmagent.policy import Generation
from vlmagent.rewards.episode import call_quality
from vlmagent.router import route_for
from vlmagent.tools import make_tools
from vlmagent.tools.base import ToolEnv
from vlmagent.types import Sample, ToolCall, ToolResult, Trajectory, Turn

MODES = ("tool", "text", "none")


class Actor(Protocol):
    """Writes the next assistant turn of every episode given (exact tokens so far)."""

    scripted: bool

    def __call__(self, episodes: list[Episode], cfg: AgentConfig, stop: str,
                 seed: int | None) -> list[Generation]: ...


class PolicyActor:
    """Samples from the policy: exact token ids and their log-probs."""

    scripted = False

    def __init__(self, policy: Any):
        self.policy = policy

    def __call__(self, episodes: list[Episode], cfg: AgentConfig, stop: str,
                 seed: int | None) -> list[Generation]:
        return self.policy.generate([e.context() for e in episodes], cfg.max_new_tokens,
                                    temperature=cfg.temperature, top_p=cfg.top_p,
                                    stop_strings=(stop,), seed=seed)


class ScriptedActor:
    """Replays given assistant texts (expert trajectories, manual debugging), tokenised.

    A text that ends with the call format's stop string stays open (the agent closes it, as
    after a sampled call); any other text is closed with the eos token, as a model would.
    """

    scripted = True

    def __init__(self, policy: Any, scripts: Callable[[Episode], list[str]]):
        self.policy = policy
        self.scripts = scripts

    def __call__(self, episodes: list[Episode], cfg: AgentConfig, stop: str,
                 seed: int | None) -> list[Generation]:
        out = []
        eos = self.policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
        for e in episodes:
            turns = self.scripts(e)
            text = turns[e.n_assistant] if e.n_assistant < len(turns) else ""
            ids = self.policy.tokenizer(text, add_special_tokens=False)["input_ids"]
            ends_call = text.rstrip().endswith(stop)
            out.append(Generation(ids + ([] if ends_call else [eos]), [], text,
                                  stop if ends_call else "eos"))
        return out


# ---------------------------------------------------------------- prompt
def _tokens(policy: Any, text: str) -> list[int]:
    return policy.tokenizer(text, add_special_tokens=False)["input_ids"]


def start_episode(policy: Any, sample: Sample, cfg: AgentConfig, tools: dict[str, Any],
                  index: int = 0, renderer: Any = None, shown: list[str] | None = None,
                  cache: ImageCache | None = None) -> Episode:
    """Prompt tokens (mask 0) for one sample: system turn with the tools, user turn with images."""
    fmt = protocol.get_format(cfg.format)

    def seen_size(w: int, h: int) -> tuple[int, int]:
        return policy.seen_size(w, h, cfg.min_pixels, cfg.max_pixels)

    shown = shown if shown is not None else sample.meta.get("shown", list(sample.images))
    env = ToolEnv.from_sample(sample, shown, renderer=renderer, seen_size=seen_size,
                              route=route_for(policy, cfg))
    traj = Trajectory(id=f"{sample.id}#{index}", sample_id=sample.id,
                      forced_mode=None if cfg.force_mode == "none" else cfg.force_mode)
    ep = Episode(sample, traj, env, cache=cache)
    specs = protocol.render_tool_specs(tools)
    system = cfg.system_prompt
    use_template_tools = fmt.name == "hermes" and _template_renders_tools(policy, specs)
    if tools and not use_template_tools and cfg.tools_in_prompt:
        system = (system + "\n\n" if system else "") + protocol.tools_system_prompt(tools, fmt.name)
    hint = protocol.MODE_HINT.get(cfg.force_mode, "") if cfg.force_mode != "none" else ""
    text = sample.prompt + (f"\n{hint}" if hint else "")
    images = [seen_image(ep, name) for name in shown]
    content = [{"type": "image", "image": im} for im in images]
    question = [{"type": "text", "text": text}]
    # "after": the question first, so the images sit right before the reply (docs/training.md)
    content = question + content if cfg.image_position == "after" else content + question
    messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
    ids = policy.chat_tokens(messages, tools=specs if use_template_tools and tools and
                             cfg.tools_in_prompt else None,
                             add_generation_prompt=True)
    traj.turns += [Turn("system", system, span=(0, 0)),
                   Turn("user", text, images=list(shown), span=(0, len(ids)))]
    traj.images.extend(images)
    traj.image_levels.extend(env.images[n].level for n in shown)
    traj.token_ids.extend(ids)
    traj.loss_mask.extend([0] * len(ids))
    return ep


def _template_renders_tools(policy: Any, specs: list[dict]) -> bool:
    """Real Qwen-VL templates differ: some ignore `tools`. Fall back to our prompt text then."""
    cached = getattr(policy, "_vlmagent_template_tools", None)
    if cached is None:
        cached = _probe_template(policy, specs)
        try:
            policy._vlmagent_template_tools = cached  # a property of the template: ask once
        except AttributeError:
            pass
    return cached


def _probe_template(policy: Any, specs: list[dict]) -> bool:
    msgs = [{"role": "user", "content": "x"}]
    render = policy.tokenizer.apply_chat_template
    try:
        return render(msgs, tools=specs, tokenize=False) != render(msgs, tokenize=False)
    except Exception:  # a template without tools support may raise on the argument
        return False


# ---------------------------------------------------------------- the loop
def rollout(policy: Any, samples: Sequence[Sample], cfg: AgentConfig, actor: Actor | None = None,
            seed: int | None = None, renderer: Any = None, group_size: int = 1,
            tools: dict[str, Any] | None = None,
            progress: Callable[[int], None] | None = None,
            image_cache: ImageCache | None = None,
            on_done: Callable[[int, Trajectory], None] | None = None) -> list[Trajectory]:
    """Run one episode per (sample, group member), batched across episodes.

    Pass one `image_cache` for a whole training run so samples are decoded once, not per visit.
    on_done(i, traj) is called once per episode (i: its index in the result) as soon as it is
    over, while the others may still be generating: a slow reward (a website built and driven
    in a browser) can start on it at once.
    """
    if cfg.force_mode not in MODES:
        raise ValueError(f"force_mode {cfg.force_mode!r} (valid: {', '.join(MODES)})")
    if cfg.image_position not in ("before", "after"):
        raise ValueError(f"image_position {cfg.image_position!r} (valid: before, after)")
    tools = tools if tools is not None else make_tools(cfg.tools)
    if renderer is None and "render_html" in tools:  # web agents look at what they wrote
        from vlmagent.tools.render import default_renderer
        renderer = default_renderer()
    actor = actor or PolicyActor(policy)
    fmt = protocol.get_format(cfg.format)
    t0 = time.perf_counter()
    episodes = _start_all(policy, samples, cfg, tools, group_size, renderer,
                          image_cache or ImageCache())
    prompt_s = (time.perf_counter() - t0) / max(1, len(episodes))
    for e in episodes:
        e.scripted = actor.scripted
        e.traj.timings = {"prompt_s": prompt_s, "generate_s": 0.0, "tools_s": 0.0}
    rnd = 0
    reported: set[int] = set()
    while active := [e for e in episodes if not e.done]:
        # the budget is checked before spending a generation on it
        active = [e for e in active if not budget_spent(e, cfg)]
        if not active:
            break
        t = time.perf_counter()
        gens = actor(active, cfg, fmt.stop, None if seed is None else seed + rnd)
        dt = (time.perf_counter() - t) / len(active)
        calls = []
        for e, g in zip(active, gens):
            e.traj.timings["generate_s"] += dt
            parsed = _assistant_turn(policy, e, g, cfg, fmt)
            if parsed is not None:
                calls.append((e, parsed))
        results = _run_tools(calls, cfg, tools)
        for (e, parsed), (result, names, images) in zip(calls, results):
            _tool_turn(policy, e, result, names, images, cfg, fmt)
        if progress:
            progress(sum(e.done for e in active))
        if on_done:
            _report_done(episodes, reported, on_done)
        rnd += 1
    if on_done:  # episodes the token budget closed before their next turn
        _report_done(episodes, reported, on_done)
    for e in episodes:
        e.traj.logps = None if e.scripted else e.logps
        e.traj.timings = {k: round(v, 4) for k, v in e.traj.timings.items()}
    return [e.traj for e in episodes]


def _report_done(episodes: list[Episode], reported: set[int],
                 on_done: Callable[[int, Trajectory], None]) -> None:
    for i, e in enumerate(episodes):
        if e.done and i not in reported:
            reported.add(i)
            on_done(i, e.traj)


def step(policy: Any, e: Episode, g: Generation, cfg: AgentConfig,
         tools: dict[str, Any]) -> ToolResult | None:
    """Advance one episode by the assistant turn `g` and, when it calls a tool, the tool turn.

    The interactive debugger's unit of work: the same turn logic as `rollout`, for one episode
    at a time (rollout batches generation and tools across episodes). Returns the tool result,
    or None when the turn ended the episode.
    """
    fmt = protocol.get_format(cfg.format)
    e.traj.timings = {"prompt_s": 0.0, "generate_s": 0.0, "tools_s": 0.0} | e.traj.timings
    parsed = _assistant_turn(policy, e, g, cfg, fmt)
    if parsed is None:
        return None
    [(result, names, images)] = _run_tools([(e, parsed)], cfg, tools)
    _tool_turn(policy, e, result, names, images, cfg, fmt)
    return result


def budget_spent(e: Episode, cfg: AgentConfig) -> bool:
    """True when the episode is over; closes it first if no token is left for another turn."""
    if not e.done and len(e.traj.token_ids) >= cfg.max_total_tokens:
        finish(e, "budget")
    return e.done


def _start_all(policy: Any, samples: Sequence[Sample], cfg: AgentConfig, tools: dict[str, Any],
               group_size: int, renderer: Any, cache: ImageCache) -> list[Episode]:
    """Prompts for every episode. Image decode and resize release the GIL, so a small thread
    pool overlaps them; members of a group share one decoded copy of their sample's images."""

    def load(sample: Sample) -> Sample:
        return replace(sample, images={k: cache.get(v) for k, v in sample.images.items()})

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        loaded = list(pool.map(load, samples))
        route = route_for(policy, cfg)
        if route is not None:  # a learned router decides for the whole batch in one pass
            route.prefetch([im for s in loaded for im in s.images.values()
                            if isinstance(im, Image.Image)])
        jobs = [(s, i) for s in loaded for i in range(group_size)]
        episodes = list(pool.map(lambda j: start_episode(policy, j[0], cfg, tools, j[1],
                                                         renderer, cache=cache), jobs))
    for e, (s, _) in zip(episodes, [(s, i) for s in samples for i in range(group_size)]):
        e.sample = s  # keep the caller's sample (paths, not decoded pixels)
    return episodes


def _assistant_turn(policy: Any, e: Episode, g: Generation, cfg: AgentConfig,
                    fmt: Any) -> Any:
    """Append the sampled turn; return the parsed call (or ParseError) when a tool must run."""
    start = len(e.traj.token_ids)
    room = cfg.max_total_tokens - start
    ids, logps, over = g.token_ids, g.logps, len(g.token_ids) > room
    if over:  # cut at the budget: the episode ends here, the sampled prefix stays exact
        ids, logps = ids[:room], logps[:room]
    append(e, ids, 1, logps)
    text = g.text if not over else policy.decode(ids)
    e.n_assistant += 1
    turn = Turn("assistant", text, span=(start, len(e.traj.token_ids)))
    e.traj.turns.append(turn)
    if e.n_assistant == 1:
        e.traj.mode = protocol.parse_mode(text)
    if over or g.stop == "length":
        return finish(e, "budget" if over else "length")
    if g.stop != fmt.stop:  # the turn ended with eos and holds no call: the answer
        return finish(e, "answer")
    parsed = fmt.parse(text)
    e.traj.n_tool_calls += 1
    if isinstance(parsed, ToolCall):
        turn.tool_call = parsed
    if e.n_assistant >= cfg.max_turns:  # no turn left to look at the result
        return finish(e, "max_turns")
    append(e, _tokens(policy, "<|im_end|>\n"), 0)  # close the call turn as the template does
    return parsed


def _run_tools(calls: list[tuple[Episode, Any]], cfg: AgentConfig, tools: dict[str, Any]
               ) -> list[tuple[ToolResult, list[str], list[Image.Image]]]:
    """Run this round's calls: thread-safe tools concurrently (PIL releases the GIL), others
    in order. Each result comes with the names of the images it added to its episode and
    those images at the size the model sees them (resized in the same worker: a zoom's output
    is large, and resizing it serially afterwards cost as much as the tool itself)."""

    def run(job: tuple[Episode, Any]) -> tuple[ToolResult, list[str], list[Image.Image]]:
        e, parsed = job
        t = time.perf_counter()
        before = set(e.env.images)
        if e.traj.n_tool_calls > cfg.max_tool_calls:
            result = ToolResult(error=f"tool call limit ({cfg.max_tool_calls}) reached; "
                                      "give your final answer now")
        else:
            result = protocol.dispatch(parsed, tools, e.env)
        names = [k for k in e.env.images if k not in before]
        for im in result.images[len(names):]:  # a tool that did not register its images
            names.append(e.env.add_image(im))
        # DriveAgent-R1 call quality (parsed, exists, args valid, ran), for the episode reward
        e.traj.meta.setdefault("call_quality", []).append(call_quality(parsed, tools, result))
        seen = [seen_image(e, n) for n in names]
        e.traj.timings["tools_s"] += time.perf_counter() - t
        return result, names, seen

    def safe(job: tuple[Episode, Any]) -> bool:
        name = getattr(job[1], "name", None)
        return getattr(tools.get(name), "thread_safe", True) if name in tools else True

    out: dict[int, tuple[ToolResult, list[str], list[Image.Image]]] = {}
    par = [j for j in calls if safe(j)]
    if len(par) > 1:
        with ThreadPoolExecutor(max_workers=min(len(par), os.cpu_count() or 1)) as pool:
            out.update(zip(map(id, par), pool.map(run, par)))
    else:
        out.update((id(j), run(j)) for j in par)
    out.update((id(j), run(j)) for j in calls if not safe(j))
    return [out[id(j)] for j in calls]


def _tool_turn(policy: Any, e: Episode, result: ToolResult, names: list[str],
               images: list[Image.Image], cfg: AgentConfig, fmt: Any) -> None:
    turn = e.traj.turns[-1]
    if result.error:
        e.traj.n_tool_errors += 1
        turn.error = result.error
    body = f"Error: {result.error}" if result.error else result.text
    rendered = fmt.render_result(body, len(names))
    content: list[dict[str, Any]] = []
    for i, piece in enumerate(rendered.split(protocol.IMAGE)):
        if piece:
            content.append({"type": "text", "text": piece})
        if i < len(images):
            content.append({"type": "image", "image": images[i]})
    ids = policy.chat_tokens([{"role": "user", "content": content}], continuation=True,
                             add_generation_prompt=True)
    if len(e.traj.token_ids) + len(ids) > cfg.max_total_tokens:
        finish(e, "budget")  # never append a tool turn that would be cut (it may hold images)
        return
    start = len(e.traj.token_ids)
    append(e, ids, 0)
    e.traj.images.extend(images)
    e.traj.image_levels.extend(e.env.images[n].level for n in names)
    e.traj.turns.append(Turn("tool", rendered, images=names, error=result.error,
                             span=(start, len(e.traj.token_ids))))

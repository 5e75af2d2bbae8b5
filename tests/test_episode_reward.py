"""The episode reward (vlmagent/rewards/episode.py): every term with exact numbers, equality
with the online reward it replaced, and THE consumer test: an episode that the token budget
closes right after a tool turn gets one and the same answer and reward from online RL,
preference pairs, held-out evaluation, the debugger and `vlmagent rollout`."""
from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmagent import agent, config
from vlmagent.config import StageConfig, resolve_stage
from vlmagent.domains import DOMAINS, zoomgrid
from vlmagent.protocol import FORMATS, get_format, parse_answer
from vlmagent.rewards.episode import (
    MODE_PENALTY,
    RewardTerms,
    final_text,
    format_score,
    mode_rewards,
    record,
    score_episodes,
)
from vlmagent.types import Sample, ToolCall, Trajectory, Turn

CALL = FORMATS["hermes"].render_call(ToolCall("zoom", {"bbox": [0, 0, 28, 28]}))
RED = Sample(id="s", prompt="What colour?", answer="red")
FULL = "<description>a</description><reasoning>b</reasoning><prediction>c</prediction>"


def episode(*assistant: str, tool_after: bool = False, mode: str | None = None,
            forced: str | None = None, matched: bool | None = None, calls: int = 0,
            quality: tuple[float, ...] = ()) -> Trajectory:
    """A finished episode: user prompt, the assistant turns (a tool turn after each but the
    last, and after the last too with `tool_after`), and the agent's bookkeeping."""
    turns = [Turn("user", RED.prompt)]
    for i, text in enumerate(assistant):
        turns.append(Turn("assistant", text))
        if i < len(assistant) - 1 or tool_after:
            turns.append(Turn("tool", "<tool_response>\n<image>\n</tool_response>"))
    t = Trajectory(id="e", turns=turns, mode=mode, forced_mode=forced, mode_matched=matched,
                   n_tool_calls=calls)
    if quality:
        t.meta["call_quality"] = list(quality)
    return t


# ---------------------------------------------------------------- per term, exact numbers
@pytest.mark.parametrize("text, want", [
    (f"<think_no_tools>{FULL}</think_no_tools><answer>red</answer>", 1.0),
    (f" <think_with_tools>{FULL}</think_with_tools>\n<answer>red</answer>\n", 1.0),
    ("<think_no_tools><prediction>c</prediction><description>a</description>"
     "<reasoning>b</reasoning></think_no_tools><answer>red</answer>", 0.8),  # out of order
    ("<think_no_tools><description>a</description><reasoning>b</reasoning></think_no_tools>"
     "<answer>red</answer>", 0.8),
    ("<think_no_tools><reasoning>b</reasoning></think_no_tools><answer>red</answer>", 0.6),
    ("<think_no_tools><reasoning>unclosed</think_no_tools><answer>red</answer>", 0.4),
    (f"<think_with_tools>{CALL}\n</think_with_tools><answer>red</answer>", 0.4),
    ("<think_no_tools></think_no_tools><answer>red</answer> and more", 0.0),  # text after
    ("<think_no_tools></think_with_tools><answer>red</answer>", 0.0),  # mismatched close
    (f"<think_no_tools>{FULL}</think_no_tools>", 0.0),  # no answer tag
    ("<answer>red</answer>", 0.0),  # no mode block
    (f"<think_with_tools><answer>red</answer>{CALL}", 0.0),  # block never closed
])
def test_format_score(text, want):
    assert format_score(text) == pytest.approx(want, abs=1e-12)


def test_format_score_takes_the_domains_answer_tag():
    meta = '<meta actions>["Stop, Straight"]</meta actions>'
    assert format_score(f"<think_no_tools>{FULL}</think_no_tools>{meta}", "meta actions") == 1.0
    assert format_score(f"<think_no_tools>{FULL}</think_no_tools>{meta}") == 0.0  # not <answer>
    assert format_score(f"<think_no_tools>{FULL}</think_no_tools><answer>x</answer>",
                        "meta actions") == 0.0


TERMS = RewardTerms(tool_bonus=0.5, format_weight=0.2, tool_quality_weight=0.1)


@pytest.mark.parametrize("traj, want", [
    # tool mode, right, all three stage tags across the two turns, calls of quality 1.0 and 0.4
    (episode(f"<think_with_tools><description>a</description><reasoning>b{CALL}",
             "</reasoning><prediction>c</prediction></think_with_tools><answer>red</answer>",
             mode="tool", forced="tool", matched=True, calls=2, quality=(1.0, 0.4)),
     {"answer": 1.0, "format": 0.2, "tool_quality": 0.07, "tool_bonus": 0.5, "mode": 0.0,
      "resolution": 0.0}),
    # text mode, wrong, forced into tool mode: no bonus, the forced-mode penalty
    (episode("<think_no_tools></think_no_tools><answer>blue</answer>", mode="text",
             forced="tool", matched=False),
     {"answer": 0.0, "format": 0.08, "tool_quality": 0.0, "tool_bonus": 0.0, "mode": -0.2,
      "resolution": 0.0}),
    # right without a tool: no bonus (DeepEyes: the bonus needs a call)
    (episode("<think_no_tools><reasoning>b</reasoning></think_no_tools><answer>Red.</answer>",
             mode="text", matched=True),
     {"answer": 1.0, "format": 0.12, "tool_quality": 0.0, "tool_bonus": 0.0, "mode": 0.0,
      "resolution": 0.0}),
    # wrong with a tool: no bonus either
    (episode(f"<think_with_tools>{CALL}", "</think_with_tools><answer>green</answer>",
             mode="tool", matched=True, calls=1, quality=(1.0,)),
     {"answer": 0.0, "format": 0.08, "tool_quality": 0.1, "tool_bonus": 0.0, "mode": 0.0,
      "resolution": 0.0}),
    # right with a tool, forced into text mode: the bonus and the penalty both apply
    (episode(f"<think_with_tools>{CALL}", "</think_with_tools><answer>red</answer>",
             mode="tool", forced="text", matched=False, calls=1, quality=(0.6,)),
     {"answer": 1.0, "format": 0.08, "tool_quality": 0.06, "tool_bonus": 0.5, "mode": -0.2,
      "resolution": 0.0}),
])
def test_terms_and_total_exact(traj, want):
    [r] = score_episodes([traj], [RED], TERMS, zoomgrid)
    assert r.values() == pytest.approx(want, abs=1e-12)
    assert r.reward == pytest.approx(sum(want.values()), abs=1e-12)
    assert r.accuracy == want["answer"] and [t.name for t in r.terms] == list(want)
    assert r.answer == parse_answer(final_text(traj)) is not None


def test_final_assistant_answer_is_scored_never_a_tool_turn():
    """The budget closed this episode right after a tool turn: the answer is the last thing
    the POLICY wrote (today's turns[-1] would be the tool's result and score 0)."""
    t = episode(f"<think_with_tools><answer>red</answer>{CALL}", tool_after=True, mode="tool",
                forced="tool", matched=True, calls=1, quality=(1.0,))
    assert t.turns[-1].role == "tool" and zoomgrid.check(t.turns[-1].text, RED) == 0.0
    [r] = score_episodes([t], [RED], TERMS, zoomgrid)
    assert (r.answer, r.accuracy) == ("red", 1.0)
    assert r.values() == pytest.approx({"answer": 1.0, "format": 0.0, "tool_quality": 0.1,
                                        "tool_bonus": 0.5, "mode": 0.0, "resolution": 0.0},
                                       abs=1e-12)
    empty = Trajectory(id="x", turns=[Turn("user", "q")])  # budget spent before any turn
    [r] = score_episodes([empty], [RED], TERMS, zoomgrid)
    assert (r.answer, r.reward) == (None, 0.0)


def test_adaptive_mode_rewards_hand_computed():
    def t(mode, calls=0, matched=True, quality=(1.0,)):
        return Trajectory(id="x", mode=mode, n_tool_calls=calls, mode_matched=matched,
                          meta={"call_quality": list(quality)})

    group = [t("tool", 1), t("tool", 1, quality=(0.4,)), t("tool", 2), t("text"), t("text"),
             t(None), t("tool", 0, matched=False)]
    acc = [1.0, 1.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    # text baseline 0.5; d = 1 - 0.5 - 0.125 = 0.375 -> *1.0 -> clipped 0.2; *0.4 = 0.15;
    # d = 0 - 0.5 - 0.25 = -0.75 -> clipped -0.2; text: 0; no tag / mismatch: -0.2
    assert mode_rewards(group, acc) == pytest.approx([0.2, 0.15, -0.2, 0.0, 0.0, -0.2, -0.2])
    # no text-mode episode in the group: the baseline is 0; d = 1 - 0.125 = 0.875 * 0.5 -> 0.2
    assert mode_rewards([t("tool", 1, quality=(0.5,))], [1.0]) == [0.2]
    assert mode_rewards([t("tool", 1, quality=(0.1,))], [1.0]) == pytest.approx([0.0875])


def test_adaptive_mode_is_per_group():
    """Each group's text-mode baseline is its own: the same tool episode earns 0.2 beside a
    wrong text episode and -0.125 beside a right one."""
    tool = episode(f"<think_with_tools>{CALL}", "</think_with_tools><answer>red</answer>",
                   mode="tool", matched=True, calls=1, quality=(1.0,))
    wrong = episode("<think_no_tools></think_no_tools><answer>blue</answer>", mode="text",
                    matched=True)
    right = episode("<think_no_tools></think_no_tools><answer>red</answer>", mode="text",
                    matched=True)
    terms = RewardTerms(adaptive_mode=True)
    got = score_episodes([tool, wrong, tool, right], [RED] * 4, terms, zoomgrid, group_size=2)
    assert [r.values()["mode"] for r in got] == pytest.approx([0.2, 0.0, -0.125, 0.0])
    assert [r.reward for r in got] == pytest.approx([1.2, 0.0, 0.875, 1.0])
    alone = score_episodes([tool, wrong, tool, right], [RED] * 4, terms, zoomgrid, group_size=4)
    # one group of four: one baseline (0.5), so both tool episodes earn min(0.375, 0.2)
    assert [r.values()["mode"] for r in alone] == pytest.approx([0.2, 0.0, 0.2, 0.0])


def _replaced_online_reward(trajs, samples, check, tool_bonus, adaptive, g):
    """train/online.sample_groups' reward before rewards/episode.py, kept verbatim as the
    reference: training rewards must not move (it scored turns[-1], so these episodes end on an
    assistant turn, where that was right)."""
    rewards = []
    for t, s in zip(trajs, samples):
        acc = check(t.turns[-1].text, s)
        r = acc + (tool_bonus if acc > 0 and t.n_tool_calls > 0 else 0.0)
        if t.forced_mode and not t.mode_matched:
            r -= MODE_PENALTY
        t.meta["accuracy"] = acc
        rewards.append(r)
    if adaptive:
        for i in range(0, len(trajs), g):
            accs = [t.meta["accuracy"] for t in trajs[i:i + g]]
            for j, bonus in enumerate(mode_rewards(trajs[i:i + g], accs)):
                rewards[i + j] += bonus
    return rewards


def test_rewards_equal_the_replaced_online_reward_bit_for_bit():
    rng = random.Random(0)
    answers = ["red", "blue", "Red.", "green"]
    for _ in range(300):
        g = rng.choice([1, 2, 4])
        trajs = []
        for _ in range(g * rng.randint(1, 3)):
            mode = rng.choice(["tool", "text", None])
            calls = rng.choice([0, 1, 2, 3])
            last = f"</think_with_tools><answer>{rng.choice(answers)}</answer>"
            trajs.append(episode(f"<think_with_tools>{CALL}", last, mode=mode,
                                 forced=rng.choice([None, "tool", "text"]),
                                 matched=rng.choice([True, False]), calls=calls,
                                 quality=tuple(rng.choice([0.0, 0.2, 0.4, 0.6, 1.0])
                                               for _ in range(calls))))
        samples = [RED] * len(trajs)
        bonus, adaptive = rng.choice([0.0, 0.3, 0.5]), rng.choice([True, False])
        want = _replaced_online_reward(trajs, samples, zoomgrid.check, bonus, adaptive, g)
        terms = RewardTerms(tool_bonus=bonus, adaptive_mode=adaptive)
        got = score_episodes(trajs, samples, terms, zoomgrid, group_size=g)
        assert [r.reward for r in got] == want  # exactly: the group advantages see no change


def test_terms_come_from_the_stage_keys():
    cfg = config.load(None, ["train.defaults.tool_bonus=0.5", "train.defaults.format_weight=0.2",
                             "train.defaults.tool_quality_weight=0.1",
                             "train.defaults.adaptive_mode=true"])
    assert RewardTerms.from_config(cfg) == RewardTerms(0.5, 0.2, 0.1, True)
    st = resolve_stage(cfg.train.defaults, StageConfig(kind="gspo", tool_bonus=1.0,
                                                       adaptive_mode=False))
    assert RewardTerms.from_stage(st) == RewardTerms(1.0, 0.2, 0.1, False)
    assert RewardTerms.from_config(config.load()) == RewardTerms()  # all extra terms off


def test_bad_batches_are_refused_and_record_writes_the_trajectory():
    t = episode("<answer>red</answer>")
    with pytest.raises(ValueError, match="1 episodes but 2 samples"):
        score_episodes([t], [RED, RED], TERMS, zoomgrid)
    with pytest.raises(ValueError, match="groups of 2"):
        score_episodes([t] * 3, [RED] * 3, TERMS, zoomgrid, group_size=2)
    scores = score_episodes([t], [RED], TERMS, zoomgrid)
    record([t], scores)
    assert (t.reward, t.meta["accuracy"]) == (1.0, 1.0)
    assert t.meta["reward_terms"] == {"answer": 1.0, "format": 0.0, "tool_quality": 0.0,
                                      "tool_bonus": 0.0, "mode": 0.0, "resolution": 0.0}


# ---------------------------------------------------------------- every consumer
def _turns(sample: Sample, mode: str, seen_size_fn, fmt: str = "hermes") -> list[str]:
    """Tool mode answers and THEN calls the zoom (the budget ends the episode after the tool
    turn, so the second turn is never written); text mode answers wrong."""
    if mode == "text":
        return ["<think_no_tools></think_no_tools><answer>blue</answer>"]
    call = get_format(fmt).render_call(ToolCall("zoom", {"bbox": [0, 0, 28, 28]}))
    return [f"<think_with_tools><answer>red</answer>{call}",
            "</think_with_tools><answer>red</answer>"]


def _make(n, seed, out_dir, kinds=("color",), size=None, seen_size=None):
    # one answer for all: the script, and so every episode's token count, is the same
    return [replace(s, answer="red", domain="tooltail")
            for s in zoomgrid.make_samples(n, seed, out_dir, kinds, size, seen_size)]


TOOLTAIL = SimpleNamespace(**{**vars(zoomgrid), "DOMAIN": "tooltail", "make_samples": _make,
                              "expert_turns": _turns})
WANT_TERMS = {"answer": 1.0, "format": 0.0, "tool_quality": 0.1, "tool_bonus": 0.5, "mode": 0.0,
              "resolution": 0.0}
WANT = 1.0 + 0.0 + 0.1 + 0.5 + 0.0 + 0.0  # the terms summed in score_episodes' order


def _yaml(tmp: Path, tiny: Path, budget: int) -> Path:
    path = tmp / f"tooltail-{budget}.yaml"
    path.write_text(f"""
policy: {{path: {tiny}, device: cpu}}
agent: {{tools: [zoom], force_mode: tool, max_turns: 3, max_tool_calls: 2, min_pixels: 784,
        max_pixels: 784, max_total_tokens: {budget}}}
domain: {{name: tooltail, kinds: [color], data_dir: {tmp / 'data'}}}
train:
  output_dir: {tmp / 'out'}
  defaults: {{domain: tooltail, tool_bonus: 0.5, format_weight: 0.2, tool_quality_weight: 0.1,
             batch_size: 1, group_size: 2, n_train: 1, eval_n: 2}}
""")
    return path


def _ends_on_tool(t: Trajectory) -> bool:
    return t.finish == "budget" and [x.role for x in t.turns][-2:] == ["assistant", "tool"]


def test_an_episode_ending_on_a_tool_turn_scores_the_same_in_every_consumer(
        tmp_path, tiny, monkeypatch, capsys):
    from vlmagent.cli import main
    from vlmagent.debug import DebugError, Session
    from vlmagent.policy import Policy
    from vlmagent.train import online, preference
    from vlmagent.train.common import StageRun, make_accelerator
    from vlmagent.train.data import samples
    from vlmagent.train.evaluate import evaluate

    monkeypatch.setitem(DOMAINS, "tooltail", TOOLTAIL)
    policy = Policy.from_pretrained(tiny)

    def script(ep: agent.Episode) -> list[str]:  # group member 0: tool mode; others: text
        return _turns(ep.sample, "tool" if ep.traj.id.endswith("#0") else "text", None)

    # the budget: exactly the tokens of prompt + answer-and-call turn + tool turn
    roomy = config.load(_yaml(tmp_path, tiny, 4096))
    [probe] = agent.rollout(policy, samples(roomy, policy, "tooltail", 1, 0), roomy.agent,
                            actor=agent.ScriptedActor(policy, script))
    assert [x.role for x in probe.turns] == ["system", "user", "assistant", "tool", "assistant"]
    path = _yaml(tmp_path, tiny, probe.turns[3].span[1])
    cfg = config.load(path)
    # the policy's own sampling is replaced by the script in every consumer
    monkeypatch.setattr(agent, "PolicyActor", lambda p: agent.ScriptedActor(p, script))

    # online RL (grpo/gspo): sample_groups
    st = resolve_stage(cfg.train.defaults, StageConfig(kind="grpo"))
    out = Path(cfg.train.output_dir) / st.name
    out.mkdir(parents=True)
    run = StageRun(st, policy, make_accelerator(out), out, 0)
    trajs, rewards, batch = online.sample_groups(run, cfg)
    tail, text = trajs
    assert _ends_on_tool(tail) and text.finish == "answer"
    assert zoomgrid.check(tail.turns[-1].text, batch[0]) == 0.0  # what turns[-1] scored
    assert (tail.answer, tail.meta["accuracy"], rewards[0]) == ("red", 1.0, WANT)
    assert tail.meta["reward_terms"] == pytest.approx(WANT_TERMS, abs=1e-12)
    assert rewards[1] == pytest.approx(0.0 + 0.2 * 0.4 - MODE_PENALTY)  # wrong, text mode

    # preference pairs from the policy's rollouts: the tool-tail episode is the chosen one
    [(chosen, rejected)] = preference.policy_pairs(run, cfg)
    assert _ends_on_tool(chosen) and chosen.reward == WANT and rejected.reward == rewards[1]

    # held-out evaluation: accuracy and reward apart, reward with the stage's terms
    ev = evaluate(cfg, policy, ["tooltail"], 2, st)["tooltail"]
    assert ev == {"accuracy": 1.0, "reward": WANT, "tool_call_rate": 1.0, "n": 2,
                  "tool_mode_rate": 1.0, "mode_matched": 1.0, "accuracy/color": 1.0}

    # the debugger, stepping the same turn with the same tokenizer
    session = Session(cfg)
    session.set_policy("manual", str(tiny))
    session.load_sample(batch[0])
    session.step(_turns(batch[0], "tool", None)[0])
    score = session.score_answer()
    assert _ends_on_tool(session.episode.traj)
    assert session.episode.traj.token_ids == tail.token_ids  # the very same episode
    assert (score["answer"], score["accuracy"], score["reward"]) == ("red", 1.0, WANT)
    assert score["terms"] == tail.meta["reward_terms"]
    with pytest.raises(DebugError, match=r"episode is over \(budget\)"):
        session.step("</think_with_tools><answer>red</answer>")

    # `vlmagent rollout --policy expert`: the saved episodes carry the same reward
    saved = tmp_path / "rollout.jsonl"
    capsys.readouterr()
    assert main(["rollout", str(path), "--n", "2", "--out", str(saved), "--policy", "expert",
                 "-q"]) == 0
    assert "accuracy 1.000, reward 1.600" in capsys.readouterr().out
    recs = [json.loads(x) for x in saved.read_text().splitlines()]
    assert len(recs) == 2
    for r in recs:
        assert r["finish"] == "budget" and r["turns"][-1]["role"] == "tool"
        assert (r["answer"], r["reward"], r["meta"]["accuracy"]) == ("red", WANT, 1.0)
        assert r["meta"]["reward_terms"] == tail.meta["reward_terms"]

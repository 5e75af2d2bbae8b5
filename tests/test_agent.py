"""The agent loop on a real tiny Qwen2.5-VL: exact tokens, masks, images per turn, bad calls,
limits, replay, and sampled log-probs equal to training log-probs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from qwen_vl_utils import smart_resize as qwen_smart_resize

from vlmagent import agent, trajectory
from vlmagent.config import AgentConfig
from vlmagent.domains import zoomqa
from vlmagent.policy import Policy
from vlmagent.protocol import FORMATS
from vlmagent.types import ToolCall

MIN_PX, MAX_PX = 56 * 56, 448 * 448
HERMES = FORMATS["hermes"]


@pytest.fixture(scope="module")
def policy(tiny):
    return Policy.from_pretrained(tiny)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    # 1001 x 667: neither side a multiple of 28, and above the pixel budget (resized down)
    return zoomqa.make_samples(3, seed=5, out_dir=tmp_path_factory.mktemp("zq"),
                               size=(1001, 667))


def cfg(**kw) -> AgentConfig:
    base = dict(min_pixels=MIN_PX, max_pixels=MAX_PX, max_new_tokens=16, temperature=1.0)
    return AgentConfig(**{**base, **kw})


def scripted(policy, turns):
    return agent.ScriptedActor(policy, lambda ep: turns)


def pad_runs(ids, pad):
    runs, i = [], 0
    while i < len(ids):
        if ids[i] == pad:
            j = i
            while j < len(ids) and ids[j] == pad:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


def test_golden_crop_zoom_answer(policy, samples):
    s = samples[0]
    sh, sw = qwen_smart_resize(667, 1001, 28, MIN_PX, MAX_PX)
    assert (sw, sh) == (532, 364)  # the seen frame, checked against Qwen's own rule
    t1 = ("<think_with_tools><description>a frame</description><reasoning>"
          + HERMES.render_call(ToolCall("crop", {"image": "image", "bbox": [100, 50, 300, 250]})))
    t2 = HERMES.render_call(ToolCall("zoom", {"image": "tool_1", "bbox": [0, 0, 140, 140]}))
    t3 = "</reasoning><prediction>7</prediction></think_with_tools><answer>7</answer>"
    [t] = agent.rollout(policy, [s], cfg(), actor=scripted(policy, [t1, t2, t3]))

    assert [x.role for x in t.turns] == ["system", "user", "assistant", "tool", "assistant",
                                         "tool", "assistant"]
    assert (t.finish, t.answer, t.mode, t.mode_matched) == ("answer", "7", "tool", True)
    assert (t.n_tool_calls, t.n_tool_errors, t.logps) == (2, 0, None)
    assert [x.images for x in t.turns] == [[], ["image"], [], ["tool_1"], [], ["tool_2"], []]
    # images: the prompt at its seen size; tool outputs at theirs (multiples of 28)
    assert t.images[0].size == (532, 364) and len(t.images) == 3
    crop_w, crop_h = t.images[1].size
    assert crop_w % 28 == 0 and crop_h % 28 == 0 and crop_w >= 532 // 2 - 28
    # one complete pad run per image, as long as its grid says, inside its own turn
    runs = pad_runs(t.token_ids, policy.image_token_id)
    assert [b - a for a, b in runs] == [(w // 28) * (h // 28) for w, h in
                                        (im.size for im in t.images)]
    spans = [x.span for x in t.turns if x.images]
    assert all(s0 <= a and b <= s1 for (a, b), (s0, s1) in zip(runs, spans))
    # masks: exactly the assistant spans, and those tokens are the script, byte for byte
    asst = [x.span for x in t.turns if x.role == "assistant"]
    want = [0] * len(t.token_ids)
    for a, b in asst:
        want[a:b] = [1] * (b - a)
    assert t.loss_mask == want and len(t.loss_mask) == len(t.token_ids)
    tok = policy.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    ids = [t.token_ids[a:b] for a, b in asst]
    assert ids[0] == tok(t1, add_special_tokens=False)["input_ids"]  # call: no eos, stays open
    assert ids[2] == tok(t3, add_special_tokens=False)["input_ids"] + [eos]
    close = tok("<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert t.token_ids[asst[0][1]:asst[0][1] + len(close)] == close  # closed by us, mask 0
    assert t.turns[3].text.startswith("<tool_response>\ncrop of image 'image'")
    # the whole episode passes the image/token invariants in a real forward pass
    [lp] = policy.logprobs([trajectory.context(t)])
    assert lp.shape == (len(t.token_ids) - 1,) and torch.isfinite(lp).all()


BAD_CALLS = [
    ('<tool_call>{"name": "zoom", "arguments": {"bbox": [1, 2, 3, 4]}</tool_call>', "JSON"),
    ('<tool_call>{"name": "teleport", "arguments": {}}</tool_call>', "crop, zoom"),
    ('<tool_call>{"name": "zoom", "arguments": {"bbox": "big"}}</tool_call>', "bbox"),
    ('<tool_call>{"name": "zoom", "arguments": {"bbox": [1, 2, 3]}}</tool_call>', "bbox"),
    ('<tool_call>{"arguments": {}}</tool_call>', "name"),
    ('<tool_call>["zoom"]</tool_call>', "object"),
    ('<tool_call>{"name": "crop", "arguments": {"bbox": [400, 300, 390, 310]}}</tool_call>',
     "bbox"),
    ('<tool_call>{"name": "crop", "arguments": {"bbox": [0, 0, 99999, 99999]}}</tool_call>',
     "outside"),
    ('<tool_call>{"name": "crop", "arguments": {"bbox": [10, 10, 12, 12]}}</tool_call>', "28"),
    ('<tool_call>{"name": "crop", "arguments": {"image": "nope", "bbox": [0, 0, 99, 99]}}'
     '</tool_call>', "unknown image"),
    ('<tool_call>{"name": "zoom", "arguments": {"bbox": [0, 0, 99, 99], "x": 1}}</tool_call>',
     "x"),
]


@pytest.mark.parametrize("bad,needle", BAD_CALLS)
def test_malformed_call_becomes_an_observation_and_the_episode_goes_on(policy, samples, bad,
                                                                       needle):
    [t] = agent.rollout(policy, [samples[1]], cfg(),
                        actor=scripted(policy, [bad, "<answer>red</answer>"]))
    assert [x.role for x in t.turns][2:] == ["assistant", "tool", "assistant"]
    tool = t.turns[3]
    assert tool.error and needle.lower() in tool.error.lower(), tool.error
    assert "Error: " in tool.text and not tool.images
    assert (t.n_tool_calls, t.n_tool_errors, t.finish, t.answer) == (1, 1, "answer", "red")
    assert t.turns[2].error == tool.error and len(t.images) == 1


def test_limits_tool_calls_turns_and_budget(policy, samples):
    call = HERMES.render_call(ToolCall("zoom", {"bbox": [0, 0, 200, 200]}))
    [t] = agent.rollout(policy, [samples[0]], cfg(max_tool_calls=1),
                        actor=scripted(policy, [call, call, "<answer>1</answer>"]))
    assert "tool call limit (1) reached" in t.turns[5].error and len(t.images) == 2
    [t] = agent.rollout(policy, [samples[0]], cfg(max_turns=2),
                        actor=scripted(policy, [call] * 5))
    assert t.finish == "max_turns" and sum(x.role == "assistant" for x in t.turns) == 2
    # a budget that fits the prompt and the call, but not the tool turn with its image
    [full] = agent.rollout(policy, [samples[0]], cfg(), actor=scripted(policy, [call, "ok"]))
    budget = full.turns[3].span[0] + 10
    [t] = agent.rollout(policy, [samples[0]], cfg(max_total_tokens=budget),
                        actor=scripted(policy, [call, "ok"]))
    assert t.finish == "budget" and len(t.token_ids) <= budget and len(t.images) == 1
    assert len(pad_runs(t.token_ids, policy.image_token_id)) == 1  # no image run was cut
    policy.logprobs([trajectory.context(t)])  # invariants hold


def test_forced_mode_hint_and_mismatch(policy, samples):
    call = HERMES.render_call(ToolCall("zoom", {"bbox": [0, 0, 200, 200]}))
    [t] = agent.rollout(policy, [samples[0]], cfg(force_mode="text"),
                        actor=scripted(policy, ["<think_no_tools>x" + call, "<answer>3</answer>"]))
    from vlmagent.protocol import MODE_HINT
    assert MODE_HINT["text"] in t.turns[1].text and t.forced_mode == "text"
    assert t.mode == "text" and t.mode_matched is False  # said text, then called a tool
    [t] = agent.rollout(policy, [samples[0]], cfg(force_mode="tool"),
                        actor=scripted(policy, ["<think_no_tools><answer>3</answer>"]))
    assert t.mode_matched is False and t.n_tool_calls == 0


def test_drive_format_episode(policy, samples):
    drive = FORMATS["drive"]
    call = drive.render_call(ToolCall("zoom", {"bbox": [0, 0, 200, 200]}))
    [t] = agent.rollout(policy, [samples[0]], cfg(format="drive"),
                        actor=scripted(policy, ["<think_with_tools>" + call, "<answer>1</answer>"]))
    assert t.turns[3].text.startswith("<tool_result>") and len(t.images) == 2
    assert "<call_tool>" in t.turns[0].text  # the tool specs are in the system prompt


def test_replay_equals_the_original(policy, samples, tmp_path):
    seen = lambda w, h: policy.seen_size(w, h, MIN_PX, MAX_PX)  # noqa: E731
    idx = {s.id: i for i, s in enumerate(samples)}
    actor = agent.ScriptedActor(policy, lambda ep: zoomqa.expert_turns(
        ep.sample, "tool" if idx[ep.sample.id] % 2 == 0 else "text", seen))
    trajs = agent.rollout(policy, samples, cfg(), actor=actor)
    assert [t.n_tool_calls for t in trajs] == [1, 0, 1]
    assert all(zoomqa.check(t.turns[-1].text, s) == 1.0 for t, s in zip(trajs, samples))
    path = tmp_path / "t.jsonl"
    trajectory.save(trajs, path)
    back = trajectory.load(path)
    for a, b in zip(trajs, back):
        assert (a.token_ids, a.loss_mask, a.logps, a.turns) == (b.token_ids, b.loss_mask,
                                                                b.logps, b.turns)
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    rec = json.loads(path.read_text().splitlines()[0])
    assert set(rec) >= {"id", "turns", "mode", "answer", "token_ids", "loss_mask", "logps"}
    assert rec["turns"][3]["images"] == [rec["images"][1]]  # per-turn files, in order
    # and a second rollout of the same script gives the same tokens (deterministic)
    again = agent.rollout(policy, samples, cfg(), actor=actor)
    assert [t.token_ids for t in again] == [t.token_ids for t in trajs]


class Hybrid:
    """First turn scripted (a real zoom call), then sampled: images from a tool in context."""

    scripted = False

    def __init__(self, policy):
        self.script = agent.ScriptedActor(policy, lambda ep: [
            "<think_with_tools>" + HERMES.render_call(ToolCall("zoom", {"bbox": [50, 50, 250,
                                                                               250]}))])
        self.sample = agent.PolicyActor(policy)

    def __call__(self, episodes, cfg, stop, seed):
        first = [e for e in episodes if e.n_assistant == 0]
        rest = [e for e in episodes if e.n_assistant > 0]
        out = dict(zip(map(id, first), self.script(first, cfg, stop, seed))) if first else {}
        if rest:
            out.update(zip(map(id, rest), self.sample(rest, cfg, stop, seed)))
        return [out[id(e)] for e in episodes]


def test_sampled_logps_equal_training_logps(policy, samples):
    c = cfg(max_new_tokens=12, max_turns=2)
    trajs = agent.rollout(policy, samples, c, seed=3, group_size=2)  # pure sampling
    trajs += agent.rollout(policy, samples[:2], c, actor=Hybrid(policy), seed=4)
    assert any(len(t.images) == 2 for t in trajs)  # sampled turns that saw a tool's image
    lps = policy.logprobs([trajectory.context(t) for t in trajs])
    worst = 0.0
    for t, lp in zip(trajs, lps):
        assert len(t.logps) == sum(t.loss_mask)
        pos = [p for p, m in enumerate(t.loss_mask) if m]
        got = torch.tensor([lp[p - 1].item() for p in pos])
        ref = torch.tensor(t.logps)
        sampled = ref != 0.0  # the Hybrid's scripted first turn has no sampled logps
        assert sampled.sum() > 0
        worst = max(worst, (got[sampled] - ref[sampled]).abs().max().item())
    print("max |sampled - training| logp diff:", worst)
    assert worst < 1e-4, worst


def test_rollout_command_expert_and_sampled(policy, tmp_path, capsys):
    from vlmagent.cli import main

    model = tmp_path / "tiny"
    assert main(["tiny", "--out", str(model)]) == 0
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    assert main(["tiny", "--out", str(tmp_path / "x"), "--family", "gpt2"]) == 2
    common = ["configs/zoomqa_rollout.yaml", "--n", "4", f"policy.path={model}",
              f"domain.data_dir={tmp_path / 'data'}", "agent.max_new_tokens=8", "-q"]
    out = tmp_path / "expert.jsonl"
    assert main(["rollout", *common, "--out", str(out), "--policy", "expert"]) == 0
    assert "accuracy 1.000" in capsys.readouterr().out  # the expert is always right
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["mode"] for r in recs] == ["tool", "text", "tool", "text"]  # both modes
    for r in recs:
        assert r["logps"] is None and len(r["loss_mask"]) == len(r["token_ids"])
        for turn in r["turns"]:
            assert {"role", "text", "images", "tool_call", "error"} <= set(turn)
            assert all((tmp_path / f).is_file() for f in turn["images"])
    out = tmp_path / "sampled.jsonl"
    assert main(["rollout", *common, "--out", str(out), "--policy", str(model)]) == 0
    for r in (json.loads(x) for x in out.read_text().splitlines()):
        assert len(r["logps"]) == sum(r["loss_mask"]) > 0
    assert main(["rollout", *common, "--out", str(out), "policy.path="]) == 2


def test_group_members_share_one_resized_prompt_image(policy, samples):
    """A GRPO group resizes its prompt image once; the pixels are those of a plain resize."""
    from vlmagent.images import ImageCache, load_image, resize_seen

    cache = ImageCache()
    c = cfg(max_new_tokens=4, max_turns=1)
    trajs = agent.rollout(policy, samples[:2], c, seed=0, group_size=3, image_cache=cache)
    for g in (trajs[:3], trajs[3:]):
        assert g[0].images[0] is g[1].images[0] is g[2].images[0]
    assert trajs[0].images[0] is not trajs[3].images[0]
    original = load_image(samples[0].images["image"])
    want = resize_seen(original, trajs[0].images[0].size)
    assert np.array_equal(np.asarray(trajs[0].images[0]), np.asarray(want))
    again = agent.rollout(policy, samples[:1], c, seed=1, image_cache=cache)  # a later epoch
    assert again[0].images[0] is trajs[0].images[0]


def test_image_position_puts_the_question_before_or_after_the_images(policy, samples):
    """`after`: the user turn is question then image, so the image sits right before the
    reply (what makes the zoom cascade hold across seeds); `before` is Qwen's usual order."""
    first_word = policy.tokenizer.encode(samples[0].prompt.split()[0], add_special_tokens=False)
    positions, tokens = {}, {}
    for where in ("before", "after"):
        ep = agent.start_episode(policy, samples[0], cfg(image_position=where), {})
        ids = ep.traj.token_ids
        image = ids.index(policy.image_token_id)
        text = next(i for i in range(len(ids)) if ids[i:i + len(first_word)] == first_word
                    and i > ids.index(policy.tokenizer.convert_tokens_to_ids("user")))
        positions[where] = (image, text)
        tokens[where] = sorted(ids)
    assert tokens["before"] == tokens["after"]  # the same tokens: only the order changes
    assert positions["before"][0] < positions["before"][1]
    assert positions["after"][1] < positions["after"][0]
    with pytest.raises(ValueError, match="image_position 'middle'"):
        agent.rollout(policy, samples[:1], cfg(image_position="middle"))

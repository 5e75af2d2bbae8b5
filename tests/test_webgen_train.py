"""Web-generation training: the webgen domain, render_html in the loop, and online RL whose
reward is the website cascade of `vlmagent score`, scored by browser workers while the policy
generates. Real tiny model, real Chromium, real worker processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vlmagent import agent, config, trajectory
from vlmagent.config import resolve_stage
from vlmagent.domains import webgen as domain
from vlmagent.policy import Policy
from vlmagent.scoring.responses import score_responses
from vlmagent.train import online, pipeline
from vlmagent.train.common import StageRun, make_accelerator
from vlmagent.train.data import EVAL_SEED, expert_episodes
from vlmagent.web.briefs import load_prompts

REPO = Path(__file__).resolve().parents[1]
FAST = """
browser: {settle_ms: 30, max_pages: 2, max_clicks_per_page: 2, max_forms_per_page: 1,
          nav_timeout_s: 4, page_budget_s: 6, site_budget_s: 10}
reward:
  stages: [structure, execution, aesthetics]
  timeouts_s: {structure: 10, execution: 12, aesthetics: 12}
score: {workers: 2, site_timeout_s: 25}
webgen: {max_total_bytes: 3000}
"""


def cfg_file(tmp: Path, model: Path, stages: str, extra: str = "", eval_n: int = 4) -> Path:
    p = tmp / "webgen.yaml"
    p.write_text(f"""
policy: {{path: {model}, device: cpu}}
agent: {{tools: [], force_mode: text, max_turns: 1, max_tool_calls: 0, max_new_tokens: 40,
         max_total_tokens: 2048}}
domain: {{name: webgen, kinds: [static], data_dir: {tmp / 'data'},
          options: {{expert: compact, instructions: false}}}}
{FAST}
train:
  output_dir: {tmp / 'out'}
  defaults: {{domain: webgen, batch_size: 2, group_size: 2, eval_n: {eval_n},
             eval_temperature: 1.0, checkpoint_every: 0, n_train: 8, lr: 0.001,
             max_new_tokens: 40}}
  stages: {stages}
{extra}""")
    return p


# ---------------------------------------------------------------- the domain
def test_samples_splits_and_options(tmp_path):
    train = domain.make_samples(40, 3, tmp_path, kinds=("static",))
    held = domain.make_samples(40, EVAL_SEED, tmp_path, kinds=("static",))
    assert {s.meta["split"] for s in train} == {"train"}
    assert {s.meta["split"] for s in held} == {"heldout"}
    names = lambda ss: {s.meta["record"]["spec"]["name"] for s in ss}  # noqa: E731
    assert not names(train) & names(held)  # held-out requests name sites training never saw
    assert len({s.id for s in train}) == 40  # no repeats while the split lasts
    assert all(s.meta["scaffold"] == "static" and s.images == {} for s in train)
    assert domain.make_samples(40, 3, tmp_path, kinds=("static",))[5].id == train[5].id
    react = domain.make_samples(5, 3, tmp_path, kinds=("vite-react",))
    assert {s.meta["scaffold"] for s in react} == {"vite-react"}
    short = domain.make_samples(1, 3, tmp_path, kinds=("static",), instructions=False)[0]
    assert short.prompt == short.meta["record"]["prompt"] and "```" in train[0].prompt
    with pytest.raises(ValueError, match="expert"):
        domain.make_samples(1, 3, tmp_path, expert="huge")
    with pytest.raises(ValueError, match="unknown webgen kind"):
        domain.make_samples(1, 3, tmp_path, kinds=("flash",))
    assert len(load_prompts()) >= 300


def test_unknown_domain_option_names_the_key(tmp_path, tiny_web):
    from vlmagent.train.data import samples

    cfg = config.load(cfg_file(tmp_path, tiny_web, "[{kind: sft}]"), ["domain.options.colour=1"])
    with pytest.raises(ValueError, match="domain.options.*colour"):
        samples(cfg, Policy.from_config(cfg.policy), "webgen", 2, 0)


def test_gpu_recipes_load_and_resolve():
    for name in ("webgen_qwen25vl_3b_lora", "webgen_qwen25vl_7b_full", "webgen_tiny"):
        cfg = config.load(REPO / "configs" / f"{name}.yaml")
        stages = pipeline.resolve_stages(cfg)
        assert [s.domain for s in stages] == ["webgen"] * len(stages)
        assert stages[0].kind == "sft" and stages[-1].kind in ("grpo", "gspo")
        assert cfg.domain.name == "webgen"
        if "qwen25vl" in name:
            assert cfg.domain.kinds == ["vite-react"] and "build" in cfg.reward.stages
            assert "render_html" in cfg.agent.tools
            # LoRA adapters train in fp32 on a bf16 base; full weights stay fp32 (autocast)
            assert cfg.policy.dtype == ("bfloat16" if name.endswith("lora") else "float32")
            assert (cfg.policy.lora is not None) == name.endswith("lora")
            domain.make_samples(2, 0, "/tmp", kinds=tuple(cfg.domain.kinds),
                                **cfg.domain.options)


# ---------------------------------------------------------------- render_html in the loop
def test_tool_mode_expert_renders_its_draft_as_an_image_turn(tmp_path, tiny_web):
    cfg = config.load(cfg_file(tmp_path, tiny_web, "[{kind: sft}]"),
                      ["agent.tools=[render_html]", "agent.force_mode=tool", "agent.max_turns=2",
                       "agent.max_tool_calls=1", "agent.min_pixels=3136",
                       "agent.max_pixels=50176"])
    policy = Policy.from_config(cfg.policy)
    [s] = domain.make_samples(1, 0, tmp_path, kinds=("static",), expert="compact",
                              instructions=False)
    [t] = expert_episodes(cfg, policy, [s], "webgen")
    roles = [x.role for x in t.turns]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    tool = t.turns[3]
    assert tool.error is None and len(tool.images) == 1 and len(t.images) == 1
    # the screenshot is in the tokens, as many image pads as the processor gives it
    pad = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    w, h = t.images[0].size
    assert t.token_ids.count(pad) == (w // 28) * (h // 28) > 0
    a, b = tool.span
    assert set(t.loss_mask[a:b]) == {0} and 1 in t.loss_mask[b:]  # masks: the tool's is 0
    im = t.images[0].convert("RGB").resize((32, 20))
    assert len(im.getcolors(4096) or range(4096)) > 3  # a page, not a blank or an error screenshot
    assert "```html path=index.html" in t.turns[4].text
    trajectory.save([t], tmp_path / "t.jsonl")  # replayable like any tool image
    [back] = trajectory.load(tmp_path / "t.jsonl")
    assert back.token_ids == t.token_ids and back.images[0].size == t.images[0].size


# ---------------------------------------------------------------- online RL on the cascade
def _responses() -> dict[str, str]:
    """Good, broken and hostile answers, as a policy could write them."""
    from vlmagent.web.expert import expert_response

    recs = load_prompts(split="train", scaffolds=["static"])
    good = "<think_no_tools></think_no_tools>\n" + expert_response(recs[0], compact=True)
    page = "```html path=index.html\n<!doctype html><html lang=en><head><meta charset=utf-8>" \
           "<title>t</title></head><body>{}</body></html>\n```\n"
    return {
        "good": good,
        "good_other": expert_response(recs[1], compact=True),
        "cut_off": good[: len(good) // 2],
        "no_files": "I would build a nice page with a header and a footer.",
        "empty": "",
        "js_error": page.format("<h1>Shop</h1><script>undefinedFunction()</script>"),
        "infinite_loop": page.format("<h1>Loop</h1><script>while(true){}</script>"),
        "network_probe": page.format(
            "<h1>Probe</h1><img src='http://203.0.113.7/x.png'>"
            "<script>fetch('http://169.254.169.254/latest/meta-data/').catch(()=>0)</script>"),
        "path_escape": "```html path=../../outside.html\n<h1>x</h1>\n```\n",
        "enormous": page.format("<p>" + "lorem ipsum " * 700 + "</p>"),
        "missing_asset": page.format("<img src='logo.png' alt=logo><h1>Cafe</h1>"),
        "duplicate_good": good,
    }


class ReplayActor(agent.ScriptedActor):
    """Replays fixed answers as if sampled: their tokens' log-probs under the policy are the
    'old' log-probs of the update (what a sampling policy would have recorded)."""

    scripted = False

    def __call__(self, episodes, cfg, stop, seed):
        gens = super().__call__(episodes, cfg, stop, seed)
        for e, g in zip(episodes, gens):
            ctx = e.context()
            full = replace(ctx, token_ids=ctx.token_ids + g.token_ids)
            with torch.no_grad():
                lp = self.policy.logprobs([full])[0][-len(g.token_ids):]
            g.logps[:] = lp.tolist()
        return gens


@pytest.mark.slow
def test_mixed_batch_trains_one_step_and_rewards_equal_score(tmp_path, tiny_web, monkeypatch):
    texts = _responses()
    names = list(texts)
    path = cfg_file(tmp_path, tiny_web, "[{kind: grpo, steps: 1}]")
    cfg = config.load(path, [f"train.defaults.batch_size={len(names) // 2}",
                             "train.defaults.group_size=2"])
    policy = Policy.from_config(cfg.policy)
    st = resolve_stage(cfg.train.defaults, cfg.train.stages[0])
    run = StageRun(st, policy, make_accelerator(tmp_path / "out"), tmp_path / "out", 0)
    order: dict[str, str] = {}  # episode id -> which answer it replays

    def scripts(ep):
        if ep.traj.id not in order:
            order[ep.traj.id] = names[len(order)]
        return [texts[order[ep.traj.id]]]

    real = agent.rollout
    monkeypatch.setattr(online.agent, "rollout", lambda *a, **kw: real(
        *a, **{**kw, "actor": ReplayActor(policy, scripts)}))
    seen = {}
    real_groups = online.sample_groups

    def spy(r, c):
        seen["out"] = real_groups(r, c)
        return seen["out"]

    monkeypatch.setattr(online, "sample_groups", spy)
    before = {k: v.clone() for k, v in policy.model.named_parameters() if v.requires_grad}
    try:
        metrics = online.online_step(run, cfg, None)
    finally:
        run.close()
    trajs, rewards, _ = seen["out"]
    assert [order[t.id] for t in trajs] == names  # every answer trained, in order
    assert metrics["groups_kept"] > 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    after = dict(policy.model.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the step updated
    web = {order[t.id]: t.meta["web"] for t in trajs}
    for name, w in web.items():  # every project has a reward and, unless perfect, a reason
        assert 0.0 <= w["reward"] <= 1.0
        assert w["reward"] > 0.99 or w["reason"], name
    assert web["good"]["functional"] == 1.0 and web["good"]["reward"] > 0.9
    assert web["duplicate_good"] == web["good"]
    for bad in ("cut_off", "no_files", "empty", "path_escape", "enormous", "infinite_loop"):
        assert web[bad]["reward"] < web["good"]["reward"] - 0.2, bad
    assert web["network_probe"]["functional"] == 0.0  # its blocked requests failed
    assert web["missing_asset"]["functional"] == 0.0 and "logo.png" in web["missing_asset"][
        "reason"]
    # the batch scorer gives every project the same reward
    lines = tmp_path / "responses.jsonl"
    lines.write_text("".join(json.dumps({"id": n, "text": texts[n]}) + "\n" for n in names))
    score_responses(lines, tmp_path / "scored.jsonl", config.load(path), "static",
                    progress=False)
    scored = {d["id"]: d for d in map(json.loads, (tmp_path / "scored.jsonl").open())}
    for name in names:
        assert scored[name]["reward"] == pytest.approx(web[name]["reward"], abs=1e-9), name
    # the episode reward is the cascade reward plus the stage's format terms (0 here)
    # minus nothing else: force_mode text with a <think_no_tools> block matches its mode
    assert rewards[names.index("good")] == pytest.approx(web["good"]["reward"])


def test_reward_cache_survives_a_restart(tmp_path):
    """A resumed stage reads its reward cache: the same project is not scored again."""
    from vlmagent.rewards.web import WebReward

    cfg = config.load(cfg_file(tmp_path, Path("unused"), "[{kind: sft}]"))
    text = _responses()["good_other"]
    cache = tmp_path / "cache.jsonl"
    with WebReward(cfg, tmp_path / "w1", cache_path=cache) as web:
        web.submit("a", text, "static")
        first = web.collect(["a"])["a"]
        assert web.stats()["scored"] == 1
    with WebReward(cfg, tmp_path / "w2", cache_path=cache) as web:
        web.submit("b", text, "static")
        again = web.collect(["b"])["b"]
        assert web.stats()["scored"] == 0 and web.stats()["cache_hits"] == 1
    assert again.reward == first.reward > 0.9 and again.metrics == first.metrics


def test_pipeline_webgen_eval_outputs_and_responses_rescore(tmp_path, tiny_web):
    path = cfg_file(tmp_path, tiny_web, "[{kind: sft, steps: 2}, {kind: grpo, steps: 1, "
                                        "rollout_chunk: 1}]")
    res = pipeline.run(config.load(path))
    out = tmp_path / "out"
    for stage in ("sft", "grpo"):
        ev = json.loads((out / stage / "eval.json").read_text())["webgen"]
        assert set(ev) >= {"reward", "functional_success_rate", "valid_render_ratio",
                           "aesthetic_score", "n", "cascade_reward"}
        assert ev["n"] == 4 and 0 <= ev["aesthetic_score"] <= 5
        assert res[stage]["webgen"] == ev
        lines = (out / stage / "responses-static.jsonl").read_text().splitlines()
        assert len(lines) == 4
        score_responses(out / stage / "responses-static.jsonl", tmp_path / f"{stage}.jsonl",
                        config.load(path), "static", progress=False)
        got = [json.loads(x)["reward"] for x in (tmp_path / f"{stage}.jsonl").open()]
        assert sum(got) / len(got) == pytest.approx(ev["cascade_reward"], abs=1e-9)
    m = [json.loads(x) for x in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert "web/functional" in m[-1] and m[-1]["web/scored"] >= 0


class Stop(Exception):
    pass


@pytest.mark.slow
def test_killed_online_stage_resumes_exactly_with_its_reward_cache(tmp_path, tiny_web,
                                                                    monkeypatch):
    """Interrupted after its step-1 checkpoint, the stage resumes at step 1, ends with the
    weights of an uninterrupted run, and scores nothing again that its cache holds."""
    from safetensors.torch import load_file

    texts = _responses()
    pick = ["good", "js_error"]  # by place in the group: every step replays the same two
    stages = "[{kind: grpo, steps: 2, checkpoint_every: 1}]"
    real = agent.rollout

    def replay(policy):
        def scripts(ep):
            return [texts[pick[int(ep.traj.id.rsplit("#", 1)[1]) % len(pick)]]]
        monkeypatch.setattr(online.agent, "rollout", lambda *a, **kw: real(
            *a, **{**kw, "actor": ReplayActor(policy, scripts)}))

    def train(root: Path, stop_at: int | None = None) -> dict:
        root.mkdir(exist_ok=True)
        cfg = config.load(cfg_file(root, tiny_web, stages, eval_n=2), ["train.log_every=1"])
        policy = Policy.from_config(cfg.policy)
        replay(policy)
        if stop_at is not None:
            groups = online.sample_groups

            def killed(run, c):
                if run.step == stop_at:
                    raise Stop
                return groups(run, c)
            monkeypatch.setattr(online, "sample_groups", killed)
        try:
            pipeline.run(cfg, policy)
        finally:
            monkeypatch.undo()
        return load_file(str(root / "out" / "grpo" / "final" / "trainable.safetensors"))

    ref = train(tmp_path / "ref")
    with pytest.raises(Stop):
        train(tmp_path / "run", stop_at=1)
    stage = tmp_path / "run" / "out" / "grpo"
    assert (stage / "checkpoints" / "step-000001" / "complete").exists()
    cache = stage / "reward_cache-rank0-static.jsonl"
    n_cached = len(cache.read_text().splitlines())
    assert n_cached >= 2  # the first step's projects, scored once each
    got = train(tmp_path / "run")
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # as if never interrupted
    lines = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 2 and lines[-1]["web/scored"] == 0  # all from the cache
    assert len(cache.read_text().splitlines()) == n_cached


@pytest.mark.slow
@pytest.mark.parametrize("procs", [1, 2])
def test_webgen_train_under_accelerate(tmp_path, tiny_web, procs):
    path = cfg_file(tmp_path, tiny_web, "[{kind: sft, steps: 1}, {kind: grpo, steps: 1, "
                                        "batch_size: 2, group_size: 2}]", eval_n=2)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", str(procs), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           *(["--multi_gpu"] if procs > 1 else []), "-m", "vlmagent.cli", "train", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr[-3000:]
    final = tmp_path / "out" / "grpo" / "final"
    digests = sorted(p.read_text() for p in final.glob("rank*.sha256"))
    assert len(digests) == procs and len(set(digests)) == 1  # the ranks end identical
    ev = json.loads((tmp_path / "out" / "grpo" / "eval.json").read_text())["webgen"]
    assert ev["n"] == 2 and "functional_success_rate" in ev

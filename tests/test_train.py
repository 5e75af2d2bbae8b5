"""The staged pipeline on a real tiny model: outputs, learning, rerun skipping, resume after
SIGKILL with the same result, and two real ranks under accelerate ending identical."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from safetensors.torch import load_file

from vlmagent import config
from vlmagent.cli import main

REPO = Path(__file__).resolve().parents[1]


def cfg_file(tmp: Path, tiny: Path, steps: int = 6, every: int = 2, stages: str = "[{kind: sft}]"
             ) -> Path:
    p = tmp / "train.yaml"
    p.write_text(f"""
policy: {{path: {tiny}, device: cpu}}
agent: {{max_new_tokens: 24, min_pixels: 3136, max_pixels: 50176}}
domain: {{data_dir: {tmp / 'data'}, kinds: [color], size: [448, 336]}}
train:
  output_dir: {tmp / 'out'}
  defaults: {{batch_size: 4, steps: {steps}, checkpoint_every: {every}, eval_n: 4, n_train: 16,
             lr: 0.001}}
  stages: {stages}
""")
    return p


def weights(stage_dir: Path) -> dict:
    return load_file(str(stage_dir / "final" / "trainable.safetensors"))


def test_sft_pipeline_outputs_and_learning(tmp_path, tiny, capsys):
    path = cfg_file(tmp_path, tiny, steps=10, every=4,
                    stages="[{kind: sft, name: sft_a}, {kind: sft, name: sft_b, steps: 2}]")
    assert main(["train", str(path), "train.log_every=1"]) == 0
    out = tmp_path / "out"
    for name in ("sft_a", "sft_b"):
        ev = json.loads((out / name / "eval.json").read_text())["zoomqa"]
        assert set(ev) >= {"accuracy", "reward", "tool_call_rate", "accuracy/color"}
        assert ev["n"] == 4 and ev["accuracy/color"] == ev["accuracy"]  # the only kind
        assert (out / name / "final" / "model.safetensors").is_file()  # HF-style export
    lines = [json.loads(x) for x in (out / "sft_a" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 11))
    assert lines[-1]["loss"] < lines[0]["loss"] - 0.5  # it learns the expert's tokens
    assert sorted(p.name for p in (out / "sft_a" / "checkpoints").iterdir()) == [
        "step-000004", "step-000008"]
    # sft_b started from sft_a's weights: its first loss continues sft_a's curve
    b = [json.loads(x) for x in (out / "sft_b" / "metrics.jsonl").read_text().splitlines()]
    assert b[0]["loss"] < lines[0]["loss"] - 0.5
    # a rerun skips both finished stages and changes nothing
    before = weights(out / "sft_b")
    capsys.readouterr()
    assert main(["train", str(path)]) == 0
    assert capsys.readouterr().out.count("finished earlier; skipped") == 2
    after = weights(out / "sft_b")
    assert all((before[k] == after[k]).all() for k in before)


def test_bad_stage_lists_exit_2(tmp_path, tiny, capsys):
    assert main(["train", str(cfg_file(tmp_path, tiny, stages="[{kind: ppo}]"))]) == 2
    assert "unknown kind 'ppo'" in capsys.readouterr().err
    assert main(["train", str(cfg_file(tmp_path, tiny, stages="[{kind: sft}, {kind: sft}]"))]) == 2
    assert "two stages are named 'sft'" in capsys.readouterr().err
    assert main(["train", str(cfg_file(tmp_path, tiny)), "train.defaults.lr=fast"]) == 2
    assert "train.defaults.lr" in capsys.readouterr().err


def _run_for(cfg, tiny, kind: str, **stage):
    """A StageRun on a fresh tiny policy (one process)."""
    from vlmagent.config import StageConfig, resolve_stage
    from vlmagent.policy import Policy
    from vlmagent.train.common import StageRun, make_accelerator

    st = resolve_stage(cfg.train.defaults, StageConfig(kind=kind, **stage))
    out = Path(cfg.train.output_dir) / st.name
    out.mkdir(parents=True, exist_ok=True)
    return StageRun(st, Policy.from_pretrained(tiny), make_accelerator(out), out, 0)


def _seq_logp(policy, trajs):
    from vlmagent import trajectory

    lps = policy.logprobs([trajectory.context(t) for t in trajs])
    return [float(lp.detach()[[p - 1 for p, m in enumerate(t.loss_mask) if m]].sum())
            for lp, t in zip(lps, trajs)]


def test_grpo_step_moves_probability_towards_higher_reward(tmp_path, tiny, monkeypatch):
    """One GRPO update raises the log-prob of above-average rollouts relative to the others
    (a dense synthetic reward, the share of vowels in the answer, gives every group a spread)."""
    from vlmagent.domains import DOMAINS, zoomqa
    from vlmagent.train import online

    dense = SimpleNamespace(**vars(zoomqa))  # zoomqa with a dense answer check
    dense.check = lambda text, s: sum(c in "aeiou" for c in text) / max(1, len(text))
    monkeypatch.setitem(DOMAINS, "dense", dense)
    cfg = config.load(cfg_file(tmp_path, tiny), ["train.defaults.domain=dense"])
    run = _run_for(cfg, tiny, "grpo", batch_size=2, group_size=6, max_new_tokens=16, lr=3e-3,
                   drop_equal_groups=True)
    seen = {}
    real = online.sample_groups

    def spy(r, c):
        seen["out"] = real(r, c)
        return seen["out"]

    monkeypatch.setattr(online, "sample_groups", spy)
    before_params = [p.detach().clone() for p in run.trainable()]
    m = online.online_step(run, cfg, None)
    trajs, rewards, _ = seen["out"]
    assert m["groups_kept"] == 1.0 and m["clip_fraction"] == 0.0 and m["ratio_mean"] == 1.0
    assert any((a != b).any() for a, b in zip(before_params, run.trainable()))
    before = [sum(t.logps) for t in trajs]  # sampled: the policy before the update
    after = _seq_logp(run.policy, trajs)
    gain = [a - b for a, b in zip(after, before)]
    for g0 in range(0, len(trajs), 6):
        r, d = rewards[g0:g0 + 6], gain[g0:g0 + 6]
        mean = sum(r) / 6
        hi = [x for x, y in zip(d, r) if y > mean]
        lo = [x for x, y in zip(d, r) if y < mean]
        assert sum(hi) / len(hi) > sum(lo) / len(lo)


def test_mpo_step_on_a_pair_file_widens_the_margin(tmp_path, tiny):
    """MPO on given pairs (expert answer vs a wrong one) raises chosen over rejected."""
    from vlmagent import agent, trajectory
    from vlmagent.config import AgentConfig
    from vlmagent.domains import zoomqa
    from vlmagent.policy import Policy
    from vlmagent.train import preference

    pol = Policy.from_pretrained(tiny)
    smp = zoomqa.make_samples(2, 3, tmp_path / "zq", kinds=("color",), size=(448, 336))
    acfg = AgentConfig(min_pixels=3136, max_pixels=50176)
    seen = lambda w, h: pol.seen_size(w, h, 3136, 50176)  # noqa: E731
    good = agent.rollout(pol, smp, acfg, actor=agent.ScriptedActor(
        pol, lambda ep: zoomqa.expert_turns(ep.sample, "text", seen)))
    bad = agent.rollout(pol, smp, acfg, actor=agent.ScriptedActor(
        pol, lambda ep: ["<think_no_tools>no idea</think_no_tools><answer>purple</answer>"]))
    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as f:
        for g, b in zip(good, bad):
            f.write(json.dumps({"chosen": trajectory.to_record(g, pairs),
                                "rejected": trajectory.to_record(b, pairs)}) + "\n")
    cfg = config.load(cfg_file(tmp_path, tiny))
    run = _run_for(cfg, tiny, "mpo", batch_size=2, lr=3e-3, data=str(pairs))
    data = preference.load_pairs(run.stage)
    margin0 = [c - r for c, r in zip(_seq_logp(run.policy, [p[0] for p in data]),
                                     _seq_logp(run.policy, [p[1] for p in data]))]
    m = preference.preference_step(run, cfg, data)
    assert m["pairs"] == 2 and {"dpo_loss", "bco_loss", "sft_loss"} <= set(m)
    margin1 = [c - r for c, r in zip(_seq_logp(run.policy, [p[0] for p in data]),
                                     _seq_logp(run.policy, [p[1] for p in data]))]
    assert all(b > a for a, b in zip(margin0, margin1)), (margin0, margin1)


# ---------------------------------------------------------------- the sample cache
def test_sample_cache_is_keyed_by_every_setting_that_changes_a_sample(tmp_path, tiny):
    """Same settings: read back (same files); another pixel budget or kind list: new samples
    in a new folder, with the readable seed/n prefix kept."""
    from PIL import Image

    from vlmagent.policy import Policy
    from vlmagent.train.data import sample_key, samples

    policy = Policy.from_pretrained(tiny)
    base = ["domain.name=zoomgrid", f"domain.data_dir={tmp_path}", "domain.kinds=[color]",
            "agent.min_pixels=784"]

    def draw(*extra: str):
        cfg = config.load(None, base + list(extra))
        return sample_key(cfg, policy, "zoomgrid", 2, 5), samples(cfg, policy, "zoomgrid", 2, 5)

    key28, at28 = draw("agent.max_pixels=784")  # 224 px seen at 28: stripes 4 px wide
    again = draw("agent.max_pixels=784")
    key56, at56 = draw("agent.max_pixels=3136")  # seen at 56: stripes 2 px wide
    assert again == (key28, at28)
    assert key28 != key56 and key28.startswith("seed5-n2-") and key56.startswith("seed5-n2-")
    assert [s.meta["stripe"] for s in at28] == [4, 4] and [s.meta["stripe"] for s in at56] == [2, 2]
    assert {Path(s.images["image"]).parent.name for s in at28 + at56} == {key28, key56}
    with Image.open(at28[0].images["image"]) as a, Image.open(at56[0].images["image"]) as b:
        assert np.asarray(a).tobytes() != np.asarray(b).tobytes()
    cfg = config.load(None, base + ["agent.max_pixels=784"])
    other = config.load(None, base + ["agent.max_pixels=784", "domain.kinds=[digit]"])
    wider = config.load(None, base + ["agent.max_pixels=784", "domain.size=[448, 448]"])
    keys = {sample_key(c, policy, d, 2, 5) for c in (cfg, other, wider)
            for d in ("zoomgrid", "zoomqa")}
    assert len(keys) == 6  # kinds, size and the domain each change the key
    colour = config.load(None, base + ["agent.max_pixels=784", "domain.kinds=[color]",
                                       "domain.size=[448, 336]"])
    digit = config.load(None, base + ["agent.max_pixels=784", "domain.kinds=[digit]",
                                      "domain.size=[448, 336]"])
    assert [s.meta["kind"] for s in samples(colour, policy, "zoomqa", 2, 5)] == ["color"] * 2
    assert [s.meta["kind"] for s in samples(digit, policy, "zoomqa", 2, 5)] == ["digit"] * 2


def test_until_stops_a_stage_on_its_probe_and_the_rerun_skips_it(tmp_path, tiny, monkeypatch,
                                                                  capsys):
    """`until`: the stage ends at the first probe at or above the level (one before the first
    step too: a stage already there runs none); the probe's numbers come from samples of their
    own (not the eval's); `steps` stays the maximum."""
    from vlmagent.train import evaluate as ev_mod
    from vlmagent.train import pipeline

    real = ev_mod.probe
    seen = []

    def probe(cfg, policy, stage):  # the real probe runs; the reported level then rises
        acc = real(cfg, policy, stage)
        assert 0.0 <= acc <= 1.0
        seen.append(stage.name)
        return [0.1, 0.5, 0.7, 0.95, 1.0][len(seen) - 1]

    monkeypatch.setattr(pipeline, "probe", probe)
    path = cfg_file(tmp_path, tiny, steps=20, every=100, stages=(
        "[{kind: sft, name: a, until: 0.9, probe_every: 1, probe_n: 2},"
        " {kind: sft, name: b, steps: 1, until: 0}, {kind: sft, name: c, until: 0.9}]"))
    assert main(["train", str(path), "train.log_every=100",
                 "train.defaults.batch_size=2", "train.defaults.eval_n=2"]) == 0
    out = tmp_path / "out"
    # a: probes before step 1 and after steps 1, 2, 3 (0.95); b: none; c: one, already there
    assert seen == ["a"] * 4 + ["c"]
    steps = {n: json.loads((out / n / "eval.json").read_text())["zoomqa"]["steps"]
             for n in "abc"}
    assert steps == {"a": 3, "b": 1, "c": 0}
    logged = [json.loads(x) for x in (out / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["probe_accuracy"]) for m in logged] == [(3, 0.95)]
    assert "probe accuracy 0.950 >= 0.9 at step 3 of 20" in capsys.readouterr().out
    wb, wc = weights(out / "b"), weights(out / "c")
    assert all(bool((wb[k] == wc[k]).all()) for k in wb)  # c ran no step: b's weights
    probes = list((tmp_path / "data" / "zoomqa").glob("seed2000003-n2-*"))
    assert len(probes) == 1  # the probe's own samples (PROBE_SEED + train.seed 0)
    assert main(["train", str(path), "train.defaults.batch_size=2",
                 "train.defaults.eval_n=2"]) == 0 and len(seen) == 5  # all finished: no probe
    bad = cfg_file(tmp_path, tiny, stages="[{kind: warmup, domain: zoomgrid, until: 0.5}]")
    assert main(["train", str(bad)]) == 2
    assert "cannot end it" in capsys.readouterr().err


def test_freeze_keeps_named_parameters_fixed_for_the_stage_only(tmp_path, tiny):
    import torch

    from vlmagent.train.sft import sft_step

    cfg = config.load(cfg_file(tmp_path, tiny))
    run = _run_for(cfg, tiny, "sft", freeze=["lm_head", "embed_tokens"], lr=1e-2)
    params = dict(run.policy.model.named_parameters())
    head, emb = params["lm_head.weight"], params["model.language_model.embed_tokens.weight"]
    before = {k: v.detach().clone() for k, v in params.items()}
    assert not head.requires_grad and not emb.requires_grad
    assert all(p is not head and p is not emb for p in run.trainable())
    sft_step(run, cfg, None)
    assert torch.equal(head, before["lm_head.weight"])
    assert torch.equal(emb, before["model.language_model.embed_tokens.weight"])
    layer = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(params[layer], before[layer])  # the rest trained
    run.close()  # the next stage trains them again
    assert head.requires_grad and emb.requires_grad

"""The perception warm-up and the readout stage on a real tiny model (fast: a few steps each)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmagent import config
from vlmagent.config import StageConfig, resolve_stage
from vlmagent.policy import Policy
from vlmagent.train import pipeline, warmup
from vlmagent.train.common import StageRun, make_accelerator
from vlmagent.train.data import expert_episodes, samples


def make_cfg(tmp: Path, tiny: Path) -> config.Config:
    return config.load(None, [f"policy.path={tiny}", "policy.device=cpu",
                              "domain.name=zoomgrid", "domain.kinds=[color]",
                              f"domain.data_dir={tmp / 'data'}", "agent.tools=[zoom]",
                              "agent.force_mode=tool", "agent.min_pixels=784",
                              "agent.max_pixels=784", f"train.output_dir={tmp / 'out'}"])


def stage_run(cfg, policy, kind: str, prepare: bool = True, **kw) -> StageRun:
    st = resolve_stage(cfg.train.defaults, StageConfig(kind=kind, domain="zoomgrid", **kw))
    if prepare:  # what the cascade does before it builds a warm-up's StageRun
        warmup.prepare(st, policy)
    out = Path(cfg.train.output_dir) / st.name
    out.mkdir(parents=True, exist_ok=True)
    return StageRun(st, policy, make_accelerator(out), out, 0)


def test_warmup_steps_reduce_the_heads_loss_and_leave_no_heads(tmp_path, tiny):
    cfg = make_cfg(tmp_path, tiny)
    policy = Policy.from_pretrained(tiny)
    run = stage_run(cfg, policy, "warmup", steps=12, batch_size=16, lr=3e-3)
    heads = {id(p) for p in getattr(policy.core, warmup.HEADS).parameters()}
    assert heads <= {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    lm_before = policy.core.lm_head.weight.detach().clone()
    losses = []
    while run.step < run.stage.steps:
        m = warmup.warmup_step(run, cfg, None)
        losses.append(m["where_loss"] + m["what_loss"])
        run.step += 1
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
    assert not hasattr(policy.core, warmup.HEADS)  # the last step removed them
    assert not any(warmup.HEADS in n for n, _ in policy.model.named_parameters())
    assert torch.equal(policy.core.lm_head.weight, lm_before)  # only the vision tower trains


def test_warmup_without_the_prepare_hook_attaches_heads_at_step_zero(tmp_path, tiny):
    cfg = make_cfg(tmp_path, tiny)
    policy = Policy.from_pretrained(tiny)
    run = stage_run(cfg, policy, "warmup", prepare=False, steps=3, batch_size=4)
    warmup.warmup_step(run, cfg, None)
    heads = {id(p) for p in getattr(policy.core, warmup.HEADS).parameters()}
    assert heads <= {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    late = stage_run(cfg, Policy.from_pretrained(tiny), "warmup", prepare=False, steps=3,
                     batch_size=4)
    late.step = 2  # a resumed stage cannot rebuild its optimiser: it must say so
    with pytest.raises(RuntimeError, match="prepare"):
        warmup.warmup_step(late, cfg, None)


def test_resumed_warmup_loads_its_heads(tmp_path, tiny):
    cfg = make_cfg(tmp_path, tiny)
    run = stage_run(cfg, Policy.from_pretrained(tiny), "warmup", steps=6, batch_size=4)
    for _ in range(2):
        warmup.warmup_step(run, cfg, None)
        run.step += 1
    run.save()
    want = {k: v.clone() for k, v in getattr(run.policy.core, warmup.HEADS).state_dict().items()}
    again = stage_run(cfg, Policy.from_pretrained(tiny), "warmup", steps=6, batch_size=4)
    assert again.resume() and again.step == 2
    got = getattr(again.policy.core, warmup.HEADS).state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_frozen_vision_is_refused(tmp_path, tiny):
    cfg = make_cfg(tmp_path, tiny)
    policy = Policy.from_pretrained(tiny)
    for p in policy.core.model.visual.parameters():
        p.requires_grad_(False)
    st = resolve_stage(cfg.train.defaults, StageConfig(kind="warmup", domain="zoomgrid"))
    with pytest.raises(ValueError, match="train_vision"):
        warmup.prepare(st, policy)
    with pytest.raises(ValueError, match="perception_batch"):
        warmup.load_data(resolve_stage(cfg.train.defaults, StageConfig(kind="warmup",
                                                                       domain="zoomqa")))


def test_what_pool_max_takes_each_features_largest_token(tmp_path, tiny):
    """what_pool: max pools the zoom's merged tokens by their per-feature maximum (a lamp one
    token shows is not averaged away); an unknown pool names the key."""
    from PIL import Image

    from vlmagent.router.learned import pooled_features

    policy = Policy.from_pretrained(tiny)
    ims = [Image.new("RGB", (56, 56), (200, 30, 20)), Image.new("RGB", (56, 56), (20, 200, 60))]
    ims[0].paste((20, 200, 60), (0, 0, 28, 28))  # one of four merged tokens differs
    with torch.no_grad():
        tokens = policy.image_features(policy.encode_images(ims)).pooler_output
        got = pooled_features(policy, ims, "max")
        mean = pooled_features(policy, ims)
    assert [t.shape[0] for t in tokens] == [4, 4]
    assert torch.allclose(got, torch.stack([t.max(0).values for t in tokens]))
    assert torch.allclose(mean, torch.stack([t.mean(0) for t in tokens]))
    assert not torch.allclose(got, mean)
    cfg = make_cfg(tmp_path, tiny)
    st = resolve_stage(cfg.train.defaults, StageConfig(kind="warmup", domain="zoomgrid",
                                                       what_pool="median"))
    with pytest.raises(ValueError, match="what_pool 'median'"):
        warmup.prepare(st, policy)
    run = stage_run(cfg, policy, "warmup", steps=8, batch_size=16, lr=3e-3, what_pool="max")
    losses = []
    while run.step < run.stage.steps:
        losses.append(warmup.warmup_step(run, cfg, None)["what_loss"])
        run.step += 1
    assert sum(losses[-2:]) / 2 < losses[0], losses


def test_decision_mask_covers_the_answer_then_the_call_arguments(tmp_path, tiny):
    cfg = make_cfg(tmp_path, tiny)
    policy = Policy.from_pretrained(tiny)
    batch = samples(cfg, policy, "zoomgrid", 2, 3)
    t = expert_episodes(cfg, policy, batch, "zoomgrid", 0)[0]

    def text(mask):
        return policy.decode([x for x, m in zip(t.token_ids, mask) if m])

    box = t.turns[2].tool_call.arguments["bbox"]
    assert text(warmup.decision_mask(policy, t, calls=False)) == batch[0].answer
    both = text(warmup.decision_mask(policy, t, calls=True))
    assert str(box) in both and both.endswith(batch[0].answer)
    # the reasoning before the call names the cell (one token): a decision too
    assert both.startswith(f"cell {batch[0].meta['cell'] + 1}")
    assert all(m <= lm for m, lm in zip(warmup.decision_mask(policy, t), t.loss_mask))


def test_readout_steps_learn_the_decision_tokens(tmp_path, tiny):
    cfg = make_cfg(tmp_path, tiny)
    run = stage_run(cfg, Policy.from_pretrained(tiny), "readout", prepare=False, steps=8,
                    batch_size=4, lr=3e-3, n_train=4)
    metrics = []
    while run.step < 5:
        metrics.append(warmup.readout_step(run, cfg, None))
        run.step += 1
    answer = [m["decision_loss"] for m in metrics[:4]]  # answer only in the first half
    assert answer[-1] < answer[0] - 1.0, answer
    assert metrics[4]["decision_tokens"] > metrics[0]["decision_tokens"]  # then the box too


def test_cascade_runs_warmup_then_readout_and_exports_a_plain_model(tmp_path, tiny):
    """Through the pipeline: the prepare hook runs before the optimiser is built, the heads train
    with the vision tower, and neither the exports nor the next stage see them."""
    cfg = config.load(None, [f"policy.path={tiny}", "policy.device=cpu", "domain.name=zoomgrid",
                             "domain.kinds=[color]", f"domain.data_dir={tmp_path / 'data'}",
                             "agent.tools=[zoom]", "agent.force_mode=tool", "agent.min_pixels=784",
                             "agent.max_pixels=784", f"train.output_dir={tmp_path / 'out'}",
                             "train.log_every=1",
                             "train.defaults={domain: zoomgrid, eval_n: 4, n_train: 8, "
                             "batch_size: 4, checkpoint_every: 0}",
                             "train.stages=[{kind: warmup, steps: 4, lr: 0.003}, "
                             "{kind: readout, steps: 2}]"])
    policy = Policy.from_pretrained(tiny)
    visual = {k: v.clone() for k, v in policy.core.model.visual.state_dict().items()}
    results = pipeline.run(cfg, policy)
    assert set(results) == {"warmup", "readout"}
    out = tmp_path / "out"
    lines = [json.loads(x) for x in (out / "warmup" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4] and "what_acc" in lines[0]
    for stage in ("warmup", "readout"):
        names = load_file(str(out / stage / "final" / "model.safetensors")).keys()
        assert not any(warmup.HEADS in n for n in names)
    trained = load_file(str(out / "warmup" / "final" / "trainable.safetensors"))
    changed = [k for k, v in policy.core.model.visual.state_dict().items()
               if not torch.equal(v, visual[k])]
    assert changed and not any(warmup.HEADS in k for k in trained)


def test_curve_lists_every_stage_and_domain():
    text = pipeline.curve({"sft": {"zoomgrid": {"accuracy": 0.5, "reward": 0.25,
                                               "tool_call_rate": 1.0}},
                          "gspo": {"zoomgrid": {"accuracy": 0.75, "reward": 0.5,
                                                "tool_call_rate": 0.5},
                                   "zoomqa": {"accuracy": 0.125, "reward": 0.125,
                                              "tool_call_rate": 0.0}}})
    rows = [r.split() for r in text.splitlines()]
    assert rows[0] == ["stage", "domain", "accuracy", "reward", "tool", "use"]
    assert rows[1:] == [["sft", "zoomgrid", "0.500", "0.250", "1.00"],
                        ["gspo", "zoomgrid", "0.750", "0.500", "0.50"],
                        ["gspo", "zoomqa", "0.125", "0.125", "0.00"]]

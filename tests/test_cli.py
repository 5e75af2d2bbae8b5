"""Command-line behaviour that spans commands: a missing model and the training schedule."""
from __future__ import annotations

import math

import pytest
import torch

from vlmagent.cli import main
from vlmagent.config import StageConfig, resolve_stage
from vlmagent.train.common import make_scheduler

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cmd", [["train", str(ROOT / "configs/zoomqa_cascade.yaml")],
                                 ["rollout", str(ROOT / "configs/zoomqa_rollout.yaml"),
                                  "--out", "x.jsonl"]])
def test_a_missing_model_names_the_path_and_how_to_build_one(cmd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # out/tiny does not exist here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(cmd + [f"policy.path={tmp_path}/no-such-model"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"no model at '{tmp_path}/no-such-model'" in err
    assert f"vlmagent tiny --out {tmp_path}/no-such-model" in err
    assert "Traceback" not in err


def _lrs(schedule: str, steps: int, warmup: int = 0) -> list[float]:
    stage = resolve_stage(StageConfig(), StageConfig(name="s", steps=steps, lr=1.0,
                                                     schedule=schedule, warmup_steps=warmup))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=stage.lr)
    sched = make_scheduler(opt, stage)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_schedules_come_from_transformers_with_their_shapes():
    assert _lrs("constant", 5) == [1.0] * 5
    cos = _lrs("cosine", 10)
    assert cos[0] == 1.0 and cos[5] == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert all(a > b for a, b in zip(cos, cos[1:]))  # strictly decreasing towards 0
    warm = _lrs("constant", 6, warmup=3)
    assert warm == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0])


def test_an_unknown_schedule_lists_the_valid_ones():
    stage = resolve_stage(StageConfig(), StageConfig(name="s", schedule="triangle"))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule 'triangle'.*cosine"):
        make_scheduler(opt, stage)


def test_gspo_gets_its_published_clip_range_unless_set():
    from vlmagent.config import StageConfig as S
    assert (resolve_stage(S(), S(kind="gspo")).eps_low,
            resolve_stage(S(), S(kind="gspo")).eps_high) == (3e-4, 4e-4)
    assert resolve_stage(S(), S(kind="grpo")).eps_low == 0.2  # GRPO's token-level range
    assert resolve_stage(S(eps_low=0.1), S(kind="gspo")).eps_low == 0.1  # defaults win
    assert resolve_stage(S(kind="gspo"), S(eps_high=0.5)).eps_high == 0.5  # the stage wins
    assert resolve_stage(S(kind="gspo"), S()).eps_high == 4e-4  # kind from the defaults


def test_a_gspo_stage_with_a_kl_coefficient_is_refused(tmp_path):
    from vlmagent.config import Config, TrainConfig
    from vlmagent.train.pipeline import resolve_stages
    cfg = Config(train=TrainConfig(stages=[StageConfig(kind="gspo", domain="zoomgrid",
                                                       kl_coef=0.05)]))
    with pytest.raises(ValueError, match="gspo has no KL term"):
        resolve_stages(cfg)

"""The staged pipeline on a real tiny model: outputs, learning, rerun skipping, resume after
SIGKILL with the same result, and two real ranks under accelerate ending identical."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from vlmagent import config
from vlmagent.cli import main
from vlmagent.tiny import build_tiny
from vlmagent.train import cascade

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "m")


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
        ev = json.loads((out / name / "eval.json").read_text())
        assert set(ev["zoomqa"]) >= {"accuracy", "reward", "tool_call_rate"}
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


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    for d in (ref_dir, run_dir):
        d.mkdir()
    ref = cfg_file(ref_dir, tiny, steps=8, every=2)
    cascade.run(config.load(ref))  # uninterrupted, in process
    path = cfg_file(run_dir, tiny, steps=8, every=2)
    shutil.copytree(ref_dir / "data", run_dir / "data")  # same samples, no regeneration
    cmd = [sys.executable, "-m", "vlmagent.cli", "train", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = run_dir / "out" / "sft" / "checkpoints" / "step-000004" / "complete"
    deadline = time.monotonic() + 240
    while not ck.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ck.exists() and not (run_dir / "out" / "sft" / "final" / "DONE").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed at step" in r.stdout + r.stderr
    a, b = weights(ref_dir / "out" / "sft"), weights(run_dir / "out" / "sft")
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


@pytest.mark.slow
def test_two_ranks_under_accelerate_end_identical(tmp_path, tiny):
    path = cfg_file(tmp_path, tiny, steps=4, every=0)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vlmagent.cli",
           "train", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    final = tmp_path / "out" / "sft" / "final"
    digests = sorted(p.read_text() for p in final.glob("rank*.sha256"))
    assert len(digests) == 2 and digests[0] == digests[1]  # two real ranks, same weights
    # and the same as one process, up to the order of float sums in the all-reduce
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(tmp_path / "data", one / "data")
    cascade.run(config.load(cfg_file(one, tiny, steps=4, every=0)))
    a, b = weights(tmp_path / "out" / "sft"), weights(one / "out" / "sft")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4

"""The training pipeline across processes: a SIGKILL then resume ends with the weights of an
uninterrupted run, and two real ranks under `accelerate launch` end identical. (Separate from
test_train.py so a parallel test run can put these slow tests on their own worker.)"""
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
from test_train import REPO, cfg_file, weights

from vlmagent import config
from vlmagent.train import pipeline


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    for d in (ref_dir, run_dir):
        d.mkdir()
    ref = cfg_file(ref_dir, tiny, steps=6, every=2)
    pipeline.run(config.load(ref))  # uninterrupted, in process
    path = cfg_file(run_dir, tiny, steps=6, every=2)
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


# micro-batches of ~2 episodes, accumulated; 20 held-out samples = 2 eval batches of 16 and 4
SCALE_STAGE = "[{kind: sft, micro_batch_tokens: 2000, eval_n: 20}]"


@pytest.mark.slow
@pytest.mark.parametrize("launch,wrapper", [("ddp", "DistributedDataParallel"),
                                            ("fsdp", "FSDPTrainForward")])
def test_two_ranks_under_accelerate_end_identical(tmp_path, tiny, launch, wrapper):
    """Two CPU ranks (gloo) launched with the shipped configs/accelerate/{ddp,fsdp}.yaml:
    accelerate wraps the policy's forward in DDP (gradient sync in the last micro-batch's
    backward) or FSDP2 (fully_shard: weights, gradients and AdamW state sharded; on CPU via
    distributed._cpu_fsdp). The ranks end identical and equal to one process, and the held-out
    evaluation (FSDP: on the gathered weights), sharded by batch over the ranks, gives one
    process's numbers exactly."""
    path = cfg_file(tmp_path, tiny, steps=4, every=0, stages=SCALE_STAGE)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file",
           str(REPO / f"configs/accelerate/{launch}.yaml"),
           "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "vlmagent.cli", "train", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, "\n".join(
        ln for ln in r.stderr.splitlines() if "Error" in ln or "rank0]:" in ln)[-3000:]
    assert f"prepared the policy's forward: {wrapper} over 2" in r.stdout + r.stderr
    final = tmp_path / "out" / "sft" / "final"
    digests = sorted(p.read_text() for p in final.glob("rank*.sha256"))
    assert len(digests) == 2 and digests[0] == digests[1]  # two real ranks, same weights
    # ... and the same as one process on the same data (gradient averaging is exact up to fp)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(tmp_path / "data", one / "data")
    pipeline.run(config.load(cfg_file(one, tiny, steps=4, every=0, stages=SCALE_STAGE)))
    a, b = weights(tmp_path / "out" / "sft"), weights(one / "out" / "sft")
    assert set(a) == set(b) and a  # FSDP saves whole tensors, every trainable one
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{launch}: max |2 ranks - 1 process| = {diff:.2e}")
    assert diff < 1e-4
    two_eval = json.loads((tmp_path / "out" / "sft" / "eval.json").read_text())
    one_eval = json.loads((one / "out" / "sft" / "eval.json").read_text())
    assert two_eval["zoomqa"]["n"] == 20 and two_eval == one_eval


@pytest.mark.slow
def test_a_rank_with_nothing_to_learn_does_not_hang_ddp(tmp_path, tiny):
    """batch_size 1 over two DDP ranks (gloo): rank 1 gets no episode in any step. It still runs
    as many wrapped forwards as rank 0 (a zero-weight one on an episode of the step's batch:
    StageRun.pad_backward), so DDP's gradient all-reduce in
    rank 0's backward has a partner: the launch ends (before the fix it waited forever; the
    timeout here turns a hang into a failure) with both ranks equal to one process."""
    stage = "[{kind: sft, batch_size: 1, eval_n: 2}]"
    path = cfg_file(tmp_path, tiny, steps=2, every=0, stages=stage)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(REPO / "configs/accelerate/ddp.yaml"),
           "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "vlmagent.cli", "train", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr[-3000:]
    digests = sorted(p.read_text() for p in (tmp_path / "out/sft/final").glob("rank*.sha256"))
    assert len(digests) == 2 and digests[0] == digests[1]
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(tmp_path / "data", one / "data")
    pipeline.run(config.load(cfg_file(one, tiny, steps=2, every=0, stages=stage)))
    a, b = weights(tmp_path / "out" / "sft"), weights(one / "out" / "sft")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4

"""The training pipeline across processes: a SIGKILL then resume ends with the weights of an
uninterrupted run, and two real ranks under `accelerate launch` end identical. (Separate from
test_train.py so a parallel test run can put these slow tests on their own worker.)"""
from __future__ import annotations

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
    pipeline.run(config.load(cfg_file(one, tiny, steps=4, every=0)))
    a, b = weights(tmp_path / "out" / "sft"), weights(one / "out" / "sft")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4

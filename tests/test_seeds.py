"""The multi-seed protocol: statistics, aggregation, and a real two-seed run with resume."""
from __future__ import annotations

import json
import math

import pytest

from vlmagent.cli import main
from vlmagent.train.seeds import aggregate, parse_seeds, stats


def test_parse_seeds_ranges_and_lists():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("1-2,9") == [1, 2, 9]
    with pytest.raises(ValueError, match="distinct"):
        parse_seeds("1,1")


def test_stats_mean_spread_and_t_interval():
    s = stats([0.9, 1.0, 0.95])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.95)
    assert (s["min"], s["max"]) == (0.9, 1.0)
    assert s["std"] == pytest.approx(0.05)
    half = 4.303 * 0.05 / math.sqrt(3)  # t(0.975, df=2)
    assert s["ci95"] == pytest.approx([0.95 - half, 0.95 + half])
    one = stats([0.7])
    assert one["std"] == 0.0 and math.isnan(one["ci95"][0])


def test_aggregate_keeps_stage_order_and_numeric_metrics_every_seed_has():
    runs = {0: {"sft": {"d": {"accuracy": 0.5, "n": 4, "note": "x"}},
                "gspo": {"d": {"accuracy": 0.75, "n": 4}}},
            1: {"sft": {"d": {"accuracy": 0.25, "n": 4, "note": "y"}},
                "gspo": {"d": {"accuracy": 1.0, "n": 4}}}}
    agg = aggregate(runs)
    assert list(agg) == ["sft", "gspo"]
    assert agg["sft"]["d"]["accuracy"]["values"] == [0.5, 0.25]
    assert agg["gspo"]["d"]["accuracy"]["mean"] == pytest.approx(0.875)
    assert "note" not in agg["sft"]["d"]


@pytest.mark.slow
def test_two_seeds_run_report_and_skip_on_rerun(tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"""
policy: {{device: cpu}}
agent: {{max_new_tokens: 24, min_pixels: 3136, max_pixels: 50176}}
domain: {{data_dir: {tmp_path / 'data'}, kinds: [color], size: [448, 336]}}
train:
  defaults: {{batch_size: 4, steps: 2, eval_n: 4, n_train: 8, lr: 0.001, checkpoint_every: 0}}
  stages: [{{kind: sft}}]
""")
    out = tmp_path / "seeds"
    args = ["seeds", str(cfg), "--seeds", "0,1", "--out", str(out), "--tiny", "qwen2_5_vl",
            "--jobs", "2"]
    assert main(args) == 0
    report = json.loads((out / "seeds.json").read_text())
    assert report["seeds"] == [0, 1] and set(report["time_s"]) == {"0", "1"}
    acc = report["stages"]["sft"]["zoomqa"]["accuracy"]
    per_seed = [json.loads((out / f"seed-{s}" / "sft" / "eval.json").read_text())["zoomqa"]
                ["accuracy"] for s in (0, 1)]
    assert acc["values"] == per_seed and acc["n"] == 2
    # each seed trained its own tiny model (init seed = training seed)
    assert json.loads((out / "seed-1" / "config.json").read_text())["policy"]["path"].endswith(
        "qwen2_5_vl-seed1")
    assert "| sft | zoomqa | accuracy |" in (out / "seeds.md").read_text()
    # the steps each stage ran (fewer than `steps` when it stops on its probe), per seed
    assert "| sft | zoomqa | steps | 2 | 2 | 2 | 2 to 2 | 2 | 2 |" in (out / "seeds.md").read_text()
    capsys.readouterr()
    assert main(args) == 0  # finished seeds are not trained again
    assert "started" not in capsys.readouterr().out
    assert json.loads((out / "seeds.json").read_text())["time_s"] == report["time_s"]

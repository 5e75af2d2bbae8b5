"""The driving domain end to end on a generated nuScenes-format dataset: samples from the real
devkit with their labels and rule, scene splits, scripted experts in both modes calling the
real tools (their images are the dataset's pixels), the DriveAgent-R1 reward terms, rollouts
saved and replayed, the CLI, and the staged pipeline with forced and adaptive mode stages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from nuscenes.nuscenes import NuScenes

from vlmagent import config, trajectory
from vlmagent.cli import main
from vlmagent.domains import driving
from vlmagent.drive.labels import LabelRule, label_dataset
from vlmagent.drive.nusc import CAMERAS
from vlmagent.drive.synth import make_dataset
from vlmagent.images import load_image, resize_seen
from vlmagent.policy import Policy
from vlmagent.rewards.episode import RewardTerms, score_episodes
from vlmagent.tools.image import to_seen
from vlmagent.train.data import expert_episodes

ROOT = Path(__file__).resolve().parents[1]
VERSION = "v1.0-synth"
TOOLS = ["get_view_with_frame", "RoI_Inspection", "depth_estimation", "detect_3d_objects"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nusc")
    make_dataset(out, scenes=10, seed=1, size=(320, 180), seconds=12.0)
    return out


def _samples(root: Path, tmp: Path, n: int, seed: int, kinds=driving.KINDS):
    return driving.make_samples(n, seed, tmp, kinds=kinds, dataroot=str(root), version=VERSION)


def _cfg(tmp: Path, root: Path, tiny: Path, stages: str = "[{kind: sft}]") -> config.Config:
    text = f"""
policy: {{path: {tiny}, device: cpu}}
agent: {{format: drive, tools: {TOOLS}, tools_in_prompt: false, max_turns: 3,
        max_tool_calls: 2, max_new_tokens: 24, max_total_tokens: 1024, min_pixels: 3136,
        max_pixels: 12544, image_position: after}}
domain: {{name: driving, kinds: [front, tool], data_dir: {tmp / 'data'}, dataroot: {root},
         version: {VERSION}}}
train: {{output_dir: {tmp / 'run'}, defaults: {{domain: driving, eval_n: 6, n_train: 64,
        checkpoint_every: 0, format_weight: 0.2}}, stages: {stages}}}
"""
    path = tmp / "drive.yaml"
    path.write_text(text)
    return config.load(path)


# ---------------------------------------------------------------- samples
def test_samples_come_from_the_devkit_with_labels_rule_and_scene_splits(root, tmp_path):
    nusc = NuScenes(VERSION, str(root), verbose=False)
    rows = {r["sample_token"]: r for r in label_dataset(nusc, LabelRule())}
    train = _samples(root, tmp_path, 60, 0)
    held = _samples(root, tmp_path, 30, driving.HELDOUT_FROM + 3)
    scenes = lambda ss: {s.meta["scene"] for s in ss}  # noqa: E731
    assert scenes(train).isdisjoint(scenes(held)) and len(scenes(held)) >= 1
    assert len({s.id for s in train}) == len(train)  # no repeats while the split lasts
    for s in train + held:
        token = s.meta["drive"]["sample_token"]
        row = rows[token]
        assert s.answer == row["meta_actions"] and s.meta["rule"] == LabelRule().to_dict()
        assert f"Navigation: {row['nav_command']}." in s.prompt
        front = nusc.get("sample", token)["data"]["CAM_FRONT"]
        assert s.images == {"CAM_FRONT": nusc.get_sample_data_path(front)}
    # kinds: where the decisive cue is, from the generator's scene description
    tool = _samples(root, tmp_path, 20, 0, kinds=("tool",))
    assert all(s.meta["kind"] == "tool" and s.meta["cue"] != "CAM_FRONT" for s in tool)
    assert _samples(root, tmp_path, 20, 0) == train[:20]  # the same seed, the same samples
    with pytest.raises(ValueError, match="drive make-data"):
        driving.make_samples(1, 0, tmp_path)
    with pytest.raises(ValueError, match="unknown driving kind 'side'"):
        _samples(root, tmp_path, 1, 0, kinds=("side",))


def test_cue_only_frames_are_those_text_mode_cannot_tell_apart(tmp_path):
    """Decoy twins (red / green light, crossing / staying pedestrian) before the ego reacts:
    the prompt's speed is the first frame's (nothing gives the twin away), yet the labels
    differ by twin; after the reaction the frames are no longer cue-only."""
    root = tmp_path / "twins"
    make_dataset(root, scenes=4, seed=3, size=(160, 90), seconds=12.0,
                 scenarios=["red_light_far", "green_light_far"])
    rows = driving._labelled(str(root.resolve()), VERSION, "{}")
    first = {}
    for r in rows:
        first.setdefault(r["scene"], r["ego_speed"])
    only = [r for r in rows if r["cue_only"]]
    assert {r["scenario"] for r in only} == {"red_light_far", "green_light_far"}
    assert 0 < len(only) < len(rows)
    for r in only:
        assert abs(r["ego_speed"] - first[r["scene"]]) < 0.2, r  # not braking yet
    later = [a for r in only if r["scenario"] == "red_light_far" for a in r["meta_actions"][1:]]
    assert any(speed in ("Decelerate", "Stop") for speed, _ in later)
    assert all(a[0] == "Keep Speed" for r in only if r["scenario"] == "green_light_far"
               for a in r["meta_actions"])
    # once the red twin brakes, its frames are ordinary tool frames
    assert any(not r["cue_only"] and r["ego_speed"] < first[r["scene"]] - 1.0 for r in rows)
    picked = driving.make_samples(len(only), 0, tmp_path / "data", dataroot=str(root),
                                  version=VERSION, frames="cue_only")
    train_only = [r for r in only if not r["heldout"]]
    assert {s.meta["drive"]["sample_token"] for s in picked} == {
        r["sample_token"] for r in train_only}
    acc = [1.0 if s.meta["scenario"] == "green_light_far" else 0.0 for s in picked]
    m = driving.eval_metrics(picked, acc)
    assert m["n_cue_only"] == len(picked) and m["accuracy/cue_only"] == sum(acc) / len(acc)
    # training draws can over-sample them; held-out draws stay as they are
    kw = dict(dataroot=str(root), version=VERSION)
    mixed = driving.make_samples(200, 0, tmp_path / "data", cue_only_share=0.5, **kw)
    plain = driving.make_samples(200, 0, tmp_path / "data", **kw)
    share = lambda ss: sum(s.meta["cue_only"] for s in ss) / len(ss)  # noqa: E731
    # half the draws are cue-only ones, the other half keep the plain share
    assert abs(share(mixed) - (0.5 + 0.5 * share(plain))) < 0.1 and share(plain) < 0.95
    held = driving.HELDOUT_FROM + 1
    assert driving.make_samples(20, held, tmp_path / "data", cue_only_share=0.5, **kw) == \
        driving.make_samples(20, held, tmp_path / "data", **kw)
    with pytest.raises(ValueError, match="domain.options.frames: 'late'"):
        driving.make_samples(1, 0, tmp_path, dataroot=str(root), version=VERSION,
                             frames="late")


def test_expert_zooms_one_box_ahead_that_holds_every_far_light(tmp_path):
    """The expert's zoom follows from what the front camera shows: on a free road (a far light,
    red or green, or none) the same box ahead, and that box holds the light of every cue-only
    frame, so a policy that learns the one call sees the lamp."""
    root = tmp_path / "ahead"
    make_dataset(root, scenes=3, seed=5, size=(480, 270), seconds=12.0,
                 scenarios=["red_light_far", "green_light_far", "clear_road"])
    samples = driving.make_samples(400, 0, tmp_path / "data", dataroot=str(root),
                                   version=VERSION)
    samples += driving.make_samples(400, driving.HELDOUT_FROM, tmp_path / "data",
                                    dataroot=str(root), version=VERSION)
    seen = lambda w, h: (140, 84)  # noqa: E731
    calls = {(c.name, json.dumps(c.arguments)) for c in
             (driving.expert_call(s, seen) for s in samples)}
    box = [66, 26, 98, 58]
    assert calls == {("RoI_Inspection", json.dumps({"view_index": 0, "bbox": box,
                                                     "description": "road ahead"}))}
    only = [s for s in samples if s.meta["cue_only"]]
    assert {s.meta["scenario"] for s in only} == {"red_light_far", "green_light_far"}
    for s in only:  # the light's own box (original pixels, rounded outwards) inside the zoom
        x0, y0, x1, y1 = to_seen(s.meta["box"], (480, 270), (140, 84))
        assert box[0] <= x0 < x1 <= box[2] and box[1] <= y0 < y1 <= box[3], s.id
    # the light's colour is named only after the zoom: text mode says what the front shows
    for s in samples[:40]:
        (text,) = driving.expert_turns(s, "text", seen)
        _, after = driving.expert_turns(s, "tool", seen)
        name = s.meta["scenario"].replace("_", " ")
        assert after.startswith(f"<reasoning>{name}</reasoning>")
        want = driving.NO_CUE if s.meta["kind"] == "tool" else name
        assert f"<reasoning>{want}</reasoning>" in text, (s.meta["scenario"], text)


def test_answer_is_the_drive_agent_r1_edit_similarity_reward():
    from vlmagent.types import Sample

    label = [["Keep Speed", "Straight"], ["Decelerate", "Straight"], ["Stop", "Straight"],
             ["Stop", "Straight"]]
    s = Sample(id="x", prompt="", answer=label, domain="driving")
    right = driving.answer(driving.meta_text(label), s)
    assert (right.value, right.accuracy) == (1.0, 1.0)
    one_off = driving.meta_text([label[0], ["Keep Speed", "Straight"], *label[2:]])
    a = driving.answer(one_off, s)  # one speed substituted in 4: 0.7 x 0.75 + 0.3
    assert a.value == pytest.approx(0.825) and a.accuracy == 0.75
    assert a.details["first_frame_joint"] == 1.0
    bad = driving.answer("<meta actions>[\"Stop, Straight\"]</meta actions>", s)
    assert (bad.value, bad.accuracy, bad.details["parsed"]) == (0.0, 0.0, False)


# ---------------------------------------------------------------- experts through the tools
def test_expert_episodes_call_the_cue_tool_and_see_the_dataset_pixels(root, tmp_path, tiny):
    cfg = _cfg(tmp_path, root, tiny)
    policy = Policy.from_config(cfg.policy)
    pool = _samples(root, tmp_path, 80, 0)
    batch = []
    for cue in ("CAM_FRONT zoom", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_FRONT history"):
        batch += [s for s in pool if s.meta["cue"] == cue][:1]
    assert len(batch) >= 2
    tool = expert_episodes(cfg, policy, batch, "driving", offset=0)  # even -> tool mode
    for t, s in zip(tool[::2], batch[::2]):
        assert t.mode == "tool" and t.n_tool_calls == 1 and t.mode_matched
        turn = next(x for x in t.turns if x.role == "tool")
        assert turn.error is None and len(t.images) == 2
        call = driving.expert_call(s, lambda w, h: policy.seen_size(w, h, 3136, 12544))
        if call.name == "get_view_with_frame":  # the camera file's own pixels, as seen
            nusc = NuScenes(VERSION, str(root), verbose=False)
            cam = CAMERAS[call.arguments["view_index"]]
            sd = nusc.get("sample_data", nusc.get("sample", s.meta["drive"]["sample_token"])
                          ["data"][cam])
            if call.arguments["frame_index"] == 1:
                sd = nusc.get("sample_data", nusc.get("sample_data", sd["prev"])["prev"]) \
                    if sd["prev"] and nusc.get("sample_data", sd["prev"])["prev"] else sd
            want = load_image(nusc.get_sample_data_path(sd["token"]))
            want = resize_seen(want, t.images[1].size)
            assert want.tobytes() == t.images[1].convert("RGB").tobytes()
        pad = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        grid = sum((w // 28) * (h // 28) for w, h in (im.size for im in t.images))
        assert t.token_ids.count(pad) == grid
    rewards = score_episodes(tool, batch, RewardTerms(format_weight=0.2), driving)
    assert all(r.accuracy == 1.0 and r.reward == pytest.approx(1.2) for r in rewards)
    assert all(r.terms[0].details["parsed"] for r in rewards)
    # saved and loaded: the same tokens and tool images (what the debugger replays)
    trajectory.save(tool, tmp_path / "t.jsonl")
    back = trajectory.load(tmp_path / "t.jsonl")
    assert [b.token_ids for b in back] == [t.token_ids for t in tool]
    assert all(a.images[-1].convert("RGB").tobytes() == b.images[-1].convert("RGB").tobytes()
               for a, b in zip(back, tool))


def test_rollout_cli_with_the_expert_policy_and_a_debugger_replay(root, tmp_path, tiny,
                                                                 monkeypatch):
    from vlmagent.debug.session import Session

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "traj.jsonl"
    rc = main(["rollout", str(ROOT / "configs/drive_rollout.yaml"), "--n", "4", "--out",
               str(out), "--policy", "expert", f"policy.path={tiny}",
               f"domain.dataroot={root}", f"domain.version={VERSION}",
               "agent.tools_in_prompt=false", "-q"])
    assert rc == 0
    trajs = trajectory.load(out)
    assert len(trajs) == 4 and {t.mode for t in trajs} == {"tool", "text"}
    assert all(t.meta["accuracy"] == 1.0 for t in trajs)
    cfg = config.load(ROOT / "configs/drive_rollout.yaml",
                      [f"policy.path={tiny}", f"domain.dataroot={root}",
                       f"domain.version={VERSION}"])
    s = Session(cfg)
    s.open_replay(str(out))
    assert [len(t.images) for t in s.replay] == [len(t.images) for t in trajs]
    s.load_domain("driving", 7, "tool")  # a generated sample, from the configured dataroot
    assert s.sample.meta["kind"] == "tool" and s.sample.domain == "driving"


def test_drive_cli_writes_a_dataset_and_labels(tmp_path, capsys):
    assert main(["drive", "make-data", "--out", str(tmp_path / "d"), "--scenes", "2",
                 "--size", "160", "90", "--seconds", "10", "-q"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["scenes"] == 2 and (tmp_path / "d" / VERSION / "scene.json").exists()
    assert main(["drive", "labels", "--dataroot", str(tmp_path / "d"), "--version", VERSION,
                 "--out", str(tmp_path / "labels.jsonl")]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    # 10 s scenes at 2 Hz: 20 key frames, the last 16 have no 8 s of future (dropped)
    assert len(rows) == 2 * 4 and f"{len(rows)} labelled key frames" in printed
    assert all(len(r["meta_actions"]) == 4 and r["rule"]["name"] == "senna" for r in rows)
    assert main(["drive", "labels", "--dataroot", str(tmp_path / "none"), "--version",
                 VERSION, "--out", str(tmp_path / "x.jsonl")]) == 2


# ---------------------------------------------------------------- the staged pipeline
def test_cascade_stages_train_with_forced_and_adaptive_modes(root, tmp_path, tiny):
    from vlmagent.train.pipeline import run

    stages = ("[{name: dm_sft, kind: sft, steps: 2, batch_size: 4, lr: 0.001}, "
              "{name: fcm_rl, kind: grpo, steps: 1, batch_size: 1, group_size: 4, "
              "mode_groups: true}, "
              "{name: ams_rl, kind: grpo, steps: 1, batch_size: 1, group_size: 4, "
              "adaptive_mode: true}]")
    cfg = _cfg(tmp_path, root, tiny, stages)
    run(cfg)
    for stage in ("dm_sft", "fcm_rl", "ams_rl"):
        ev = json.loads((tmp_path / "run" / stage / "eval.json").read_text())["driving"]
        assert ev["n"] == 6 and {"first_frame_joint", "seq_joint", "speed_acc", "path_acc",
                                  "tool_call_rate", "tool_mode_rate"} <= set(ev)
        assert 0.0 <= ev["seq_joint"] <= 1.0
    assert (tmp_path / "run" / "ams_rl" / "final" / "DONE").exists()


def test_shipped_configs_load(tmp_path):
    for name in ("drive_cascade.yaml", "drive_cascade_short.yaml", "drive_rollout.yaml"):
        cfg = config.load(ROOT / "configs" / name)
        assert cfg.domain.name == "driving" and cfg.agent.format == "drive"
        assert set(cfg.agent.tools) == set(TOOLS)
    stages = yaml.safe_load((ROOT / "configs/drive_cascade.yaml").read_text())["train"]["stages"]
    assert [s["kind"] for s in stages] == ["warmup", "readout", "grpo", "grpo"]
    assert [s.get("mode_groups", False) for s in stages] == [False, False, True, False]
    assert [s.get("adaptive_mode", False) for s in stages] == [False, False, False, True]


def test_perception_batch_pairs_the_front_image_with_the_cue_view(root):
    seen = lambda w, h: (140, 84)  # noqa: E731
    batch = driving.perception_batch(12, 0, seen, dataroot=str(root), version=VERSION)
    assert len(batch) == 12 and all(b["overview"].size == (140, 84) for b in batch)
    for b in batch:
        assert 0 <= b["cell"] < driving.CELLS
        assert 0 <= b["label"] < len(driving.ANSWERS["scenario"])
    # training scenes only, for any seed (the trainer's step seeds run past HELDOUT_FROM)
    held = {r["scene"] for r in driving.split_frames(root, VERSION, True)}
    train = {r["scene"] for r in driving.split_frames(root, VERSION, False)}
    for seed in (3, driving.HELDOUT_FROM + 3, 6_684_676):
        for b in driving.perception_batch(8, seed, seen, dataroot=str(root), version=VERSION,
                                          cue_only_share=0.5):
            assert b["scene"] in train and b["scene"] not in held
    zoomed = [b for b in batch if driving.FRONT[b["cell"]] == "CAM_FRONT zoom"]
    lights = {"red_light_far", "green_light_far"}
    assert all(driving.ANSWERS["scenario"][b["label"]] in lights for b in zoomed)

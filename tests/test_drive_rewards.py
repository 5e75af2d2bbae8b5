"""DriveAgent-R1 answer accuracy: hand-computed edit similarities and rewards, parsing."""
from __future__ import annotations

import json

import pytest

from vlmagent.rewards.driving import (
    edit_similarity,
    meta_action_reward,
    meta_action_rewards,
    parse_meta_actions,
)

LABEL = [["Keep Speed", "Straight"], ["Decelerate", "Straight"], ["Stop", "Left Turn"],
         ["Stop", "Straight"]]


def tagged(entries) -> str:
    return f"<meta actions>{json.dumps(entries)}</meta actions>"


def as_strings(pairs) -> list[str]:
    return [f"{s}, {p}" for s, p in pairs]


# ---------------------------------------------------------------- edit similarity
@pytest.mark.parametrize("a, b, want", [
    ("ABCD", "ABCD", 1.0),
    ("ABCD", "ABXD", 0.75),  # one substitution (cost 1) in 4
    ("ABCD", "ABD", 0.85),  # one deletion: 1 - 0.6 / 4
    ("ABC", "ABCD", 0.85),  # one insertion
    ("ABCD", "BCDE", 0.7),  # shifted: delete + insert (1.2) beats 4 substitutions
    ("ABCD", "WXYZ", 0.0),
    ("ABCD", "", 0.4),  # 4 deletions: 1 - 2.4 / 4
    ("", "", 1.0),
    ("AB", "BA", 0.4),  # delete A, insert it after B: 1.2, cheaper than 2 substitutions
])
def test_edit_similarity(a, b, want):
    assert edit_similarity(list(a), list(b)) == pytest.approx(want)


def test_edit_similarity_clamps_and_takes_indel():
    assert edit_similarity(["a"], [], indel=2.0) == 0.0
    assert edit_similarity(list("ABCD"), list("ABD"), indel=1.0) == pytest.approx(0.75)


# ---------------------------------------------------------------- the reward
def test_exact_answer_scores_one():
    r, d = meta_action_reward("<think_no_tools>...</think_no_tools>" +
                              tagged(as_strings(LABEL)), LABEL)
    assert r == pytest.approx(1.0)
    assert d["parsed"] and d["r_speed"] == pytest.approx(0.7) and d["r_path"] == pytest.approx(0.3)
    assert (d["speed_acc"], d["path_acc"], d["first_frame_joint"], d["seq_joint"]) == \
        (1.0, 1.0, 1.0, 1.0)


def test_one_wrong_speed_and_one_wrong_path():
    pred = [list(x) for x in LABEL]
    pred[2][0] = "Keep Speed"  # speed wrong at +4 s
    r, d = meta_action_reward(tagged(pred), LABEL)
    assert r == pytest.approx(0.7 * 0.75 + 0.3)  # 0.825
    assert d["speed_acc"] == 0.75 and d["path_acc"] == 1.0
    assert d["first_frame_joint"] == 1.0 and d["seq_joint"] == 0.75
    pred = [list(x) for x in LABEL]
    pred[0][1] = "Right Turn"  # path wrong now
    r, d = meta_action_reward(tagged(pred), LABEL)
    assert r == pytest.approx(0.7 + 0.3 * 0.75)  # 0.925
    assert d["first_frame_joint"] == 0.0 and d["seq_joint"] == 0.75 and d["path_acc"] == 0.75


def test_shifted_sequence_keeps_partial_credit():
    # predicted speeds one step late: [KS, KS, Dec, Stop] vs [KS, Dec, Stop, Stop]: edit
    # distance 1.2 (insert KS, delete the last Stop) -> 0.7; paths all Straight: one sub -> 0.75
    pred = [["Keep Speed", "Straight"], ["Keep Speed", "Straight"], ["Decelerate", "Straight"],
            ["Stop", "Straight"]]
    r, d = meta_action_reward(tagged(pred), LABEL)
    assert d["r_speed"] == pytest.approx(0.7 * 0.7)
    assert r == pytest.approx(0.49 + 0.3 * 0.75)
    assert d["speed_acc"] == 0.5  # exact per-step accuracy sees only 2 of 4


def test_tolerant_spelling_pairs_and_last_block():
    pairs = [["keep  speed", " STRAIGHT "], ["DECELERATE", "straight"], ["stop", "left turn"],
             ["Stop", "Straight"]]
    text = tagged([["Stop", "Straight"]] * 4) + " then changed its mind " + tagged(pairs)
    assert parse_meta_actions(text) == [tuple(x) for x in LABEL]
    assert meta_action_reward(text, LABEL)[0] == pytest.approx(1.0)
    single = "<meta actions>['Keep Speed,Straight', 'Decelerate , Straight', " \
             "'Stop, Left Turn', 'Stop, Straight']</meta actions>"
    assert parse_meta_actions(single) == [tuple(x) for x in LABEL]


@pytest.mark.parametrize("text, reason", [
    (tagged(as_strings(LABEL)[:3]), "3 entries"),
    (tagged(as_strings(LABEL) + ["Stop, Straight"]), "5 entries"),
    (tagged(["Speed Up, Straight"] + as_strings(LABEL)[1:]), "entry 0"),
    (tagged(["Straight, Keep Speed"] + as_strings(LABEL)[1:]), "entry 0"),  # swapped
    (tagged(["Keep Speed"] + as_strings(LABEL)[1:]), "entry 0"),
    (tagged(["Keep Speed, Straight, Left Turn"] + as_strings(LABEL)[1:]), "entry 0"),
    (json.dumps(as_strings(LABEL)), "no <meta actions>"),  # missing tag
    ("<answer>" + json.dumps(as_strings(LABEL)) + "</answer>", "no <meta actions>"),
    ("<meta actions>Keep Speed, Straight</meta actions>", "not a JSON list"),
    ('<meta actions>{"a": 1}</meta actions>', "not a list"),
    ("<meta actions>[" + json.dumps(as_strings(LABEL)), "no <meta actions>"),  # unclosed
])
def test_unparsable_scores_zero(text, reason):
    assert parse_meta_actions(text) is None
    r, d = meta_action_reward(text, LABEL)
    assert r == 0.0 and d["parsed"] is False and reason in d["reason"]
    assert d["seq_joint"] == 0.0 and d["first_frame_joint"] == 0.0


def test_label_forms():
    text = tagged(as_strings(LABEL))
    assert meta_action_reward(text, json.dumps(as_strings(LABEL)))[0] == pytest.approx(1.0)
    assert meta_action_reward(text, text)[0] == pytest.approx(1.0)
    assert meta_action_reward(text, [tuple(x) for x in LABEL])[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a meta-action label"):
        meta_action_reward(text, LABEL[:3])
    with pytest.raises(ValueError, match="not a meta-action label"):
        meta_action_reward(text, [["Go", "Straight"]] * 4)


def test_batch_form():
    good, bad = tagged(as_strings(LABEL)), "no answer"
    assert meta_action_rewards([good, bad], [LABEL, LABEL], prompts=None) == \
        pytest.approx([1.0, 0.0])

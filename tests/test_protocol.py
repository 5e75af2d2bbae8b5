"""Tool-call wire formats, dispatch (with the call quality the episode reward gives each
dispatched call) and the hybrid-thinking helpers."""
from __future__ import annotations

import random

import pytest
from PIL import Image

from vlmagent.images import QWEN2_5_VL_DEFAULT
from vlmagent.protocol import (
    FORMATS,
    IMAGE,
    MODE_HINT,
    THINK_TAGS,
    ParseError,
    dispatch,
    get_format,
    parse_answer,
    parse_final,
    parse_mode,
    render_tool_specs,
    stage_tags,
    tools_system_prompt,
)
from vlmagent.rewards.episode import call_quality
from vlmagent.tools import Tool, ToolEnv, make_tools
from vlmagent.types import ToolCall, ToolResult

HERMES, DRIVE = FORMATS["hermes"], FORMATS["drive"]
ZOOM_ARGS = {"image": "image", "bbox": [100, 50, 300, 250], "factor": 2}


def env_1001() -> ToolEnv:
    env = ToolEnv(seen_size=QWEN2_5_VL_DEFAULT.seen_size)
    env.add_image(Image.new("RGB", (1001, 667), (200, 200, 200)), "image")
    return env


@pytest.fixture
def tools():
    return make_tools(["crop", "zoom", "retrieve_view"])


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", ["hermes", "drive"])
@pytest.mark.parametrize("args", [ZOOM_ARGS, {}, {"view": "CAM_BACK \"quoted\" ünïcode"},
                                  {"nested": {"a": [1, 2.5, None, True]}}])
def test_render_parse_round_trip(name, args):
    fmt = FORMATS[name]
    call = ToolCall("zoom", args)
    text = fmt.render_call(call)
    assert text.endswith(fmt.stop)
    got = fmt.parse("I will look closer. " + text)
    assert isinstance(got, ToolCall)
    assert (got.name, got.arguments, got.raw) == ("zoom", args, text)


def test_wire_shapes():
    call = ToolCall("zoom", {"bbox": [1, 2, 3, 4]})
    assert HERMES.render_call(call) == ('<tool_call>\n{"name": "zoom", "arguments": {"bbox": '
                                        '[1, 2, 3, 4]}}\n</tool_call>')
    assert DRIVE.render_call(call) == ('<call_tool><tool_name>zoom</tool_name><params>{"bbox": '
                                       '[1, 2, 3, 4]}</params></call_tool>')
    assert (HERMES.stop, DRIVE.stop) == ("</tool_call>", "</call_tool>")
    assert get_format("drive") is DRIVE and get_format(HERMES) is HERMES
    with pytest.raises(ValueError, match="hermes, drive"):
        get_format("xml")


def test_render_result_has_one_marker_per_image():
    assert HERMES.render_result("ok", 0) == "<tool_response>\nok\n</tool_response>"
    assert HERMES.render_result("ok", 2) == \
        f"<tool_response>\nok\n{IMAGE}\n{IMAGE}\n</tool_response>"
    assert DRIVE.render_result("zoomed", 1) == f"<tool_result> zoomed {IMAGE} </tool_result>"
    assert DRIVE.render_result("", 1) == f"<tool_result> {IMAGE} </tool_result>"
    assert DRIVE.render_result("bad box", 0).count(IMAGE) == 0


def test_last_call_wins_and_no_call_is_none():
    text = HERMES.render_call(ToolCall("crop", {"bbox": [0, 0, 50, 50]})) + " then " + \
        HERMES.render_call(ToolCall("zoom", {"bbox": [1, 1, 60, 60]}))
    assert HERMES.parse(text).name == "zoom"
    assert HERMES.parse("<answer>7</answer>") is None
    assert DRIVE.parse("plain text") is None
    assert DRIVE.parse(HERMES.render_call(ToolCall("zoom", {}))) is None  # other format's syntax


def test_lenient_forms():
    # OpenAI-style JSON-encoded arguments, missing arguments, missing/empty params
    got = HERMES.parse('<tool_call>{"name": "zoom", "arguments": "{\\"bbox\\": [1,2,3,4]}"}'
                       '</tool_call>')
    assert got.arguments == {"bbox": [1, 2, 3, 4]}
    assert HERMES.parse('<tool_call>{"name": " zoom "}</tool_call>') == \
        ToolCall("zoom", {}, '<tool_call>{"name": " zoom "}</tool_call>')
    assert DRIVE.parse("<call_tool><tool_name>zoom</tool_name></call_tool>").arguments == {}
    assert DRIVE.parse("<call_tool><tool_name>zoom</tool_name><params> </params>"
                       "</call_tool>").arguments == {}


# ---------------------------------------------------------------- malformed calls
HERMES_BAD = {
    "unclosed": ('<tool_call>{"name": "zoom", "arguments": {}}', "unclosed <tool_call>"),
    "no opening": ('{"name": "zoom"}</tool_call>', "without an opening <tool_call>"),
    "empty": ("<tool_call>  </tool_call>", "empty <tool_call>"),
    "broken json": ('<tool_call>{"name": "zoom" "arguments": {}}</tool_call>',
                    "broken JSON in <tool_call>: Expecting ',' delimiter at line 1 column 17"),
    "truncated json": ('<tool_call>{"name": "zoom", "arguments": {"bbox": [1, 2</tool_call>',
                       "broken JSON in <tool_call>"),
    "not an object": ('<tool_call>["zoom", {}]</tool_call>', "must be a JSON object, got list"),
    "a string": ('<tool_call>"zoom"</tool_call>', "must be a JSON object, got str"),
    "missing name": ('<tool_call>{"arguments": {}}</tool_call>', 'non-empty "name"'),
    "empty name": ('<tool_call>{"name": "", "arguments": {}}</tool_call>', 'non-empty "name"'),
    "name not str": ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', 'non-empty "name"'),
    "args list": ('<tool_call>{"name": "zoom", "arguments": [1, 2]}</tool_call>',
                  '"arguments" must be a JSON object'),
    "args bad string": ('<tool_call>{"name": "zoom", "arguments": "{bbox"}</tool_call>',
                        'broken JSON in "arguments"'),
}
DRIVE_BAD = {
    "unclosed": ("<call_tool><tool_name>zoom</tool_name><params>{}</params>",
                 "unclosed <call_tool>"),
    "no name": ("<call_tool><params>{}</params></call_tool>", "missing <tool_name>"),
    "unclosed name": ("<call_tool><tool_name>zoom<params>{}</params></call_tool>",
                      "unclosed <tool_name>"),
    "empty name": ("<call_tool><tool_name> </tool_name></call_tool>", "empty <tool_name>"),
    "unclosed params": ('<call_tool><tool_name>zoom</tool_name><params>{"a": 1}</call_tool>',
                        "unclosed <params>"),
    "broken json": ('<call_tool><tool_name>zoom</tool_name><params>{"bbox": [1, 2,}</params>'
                    "</call_tool>", "broken JSON in <params>: Expecting value at line 1 column"),
    "not an object": ("<call_tool><tool_name>zoom</tool_name><params>[1, 2, 3, 4]</params>"
                      "</call_tool>", "<params> must be a JSON object, got list"),
}


@pytest.mark.parametrize("fmt,text,message", [
    *[(HERMES, t, m) for t, m in HERMES_BAD.values()],
    *[(DRIVE, t, m) for t, m in DRIVE_BAD.values()],
], ids=[f"hermes-{k}" for k in HERMES_BAD] + [f"drive-{k}" for k in DRIVE_BAD])
def test_malformed_calls_become_readable_errors(fmt, text, message, tools):
    got = fmt.parse(text)
    assert isinstance(got, ParseError)
    assert message in got.message
    assert got.raw  # what the model wrote, for the debugger
    result = dispatch(got, tools, env_1001())
    assert result.error.startswith("could not parse the tool call: ")
    assert message in result.error and not result.images
    assert call_quality(got, tools, result) == 0.0


def test_broken_json_says_where():
    err = HERMES.parse('<tool_call>{"name": "zoom",\n "arguments": {"bbox": [1, 2 3]}}</tool_call>')
    assert "line 2 column" in err.message and "near" in err.message


# ---------------------------------------------------------------- dispatch + call quality
@pytest.mark.parametrize("args,expect", [
    ({"bbox": [1, 2, 3]}, "argument 'bbox': expected exactly 4 items, got 3"),
    ({"bbox": "[1, 2, 3, 4]"}, "argument 'bbox': expected array, got string"),
    ({"bbox": [1, 2, "3", 4]}, "argument 'bbox[2]': expected number, got string '3'"),
    ({"bbox": [1, 2, True, 4]}, "argument 'bbox[2]': expected number, got boolean True"),
    ({"bbox": [0, 0, 100, 100], "zoom": 2}, "unexpected argument 'zoom' (allowed: image, bbox, "
                                            "factor)"),
    ({"image": "image"}, "missing required argument 'bbox'"),
    ({"bbox": [0, 0, 100, 100], "factor": 9}, "argument 'factor': must be <= 4, got 9"),
    ({"bbox": [0, 0, 100, 100], "image": 3}, "argument 'image': expected string, got integer 3"),
])
def test_invalid_arguments(args, expect, tools):
    call = ToolCall("zoom", args)
    result = dispatch(call, tools, env_1001())
    assert result.error.startswith(f"invalid arguments for zoom: {expect}")
    assert call_quality(call, tools, result) == pytest.approx(0.4)


def test_call_quality_levels(tools):
    env = env_1001()
    cases = [
        (HERMES.parse("<tool_call>{oops</tool_call>"), 0.0),
        (None, 0.0),
        (ToolCall("magnify", {"bbox": [0, 0, 9, 9]}), 0.2),
        (ToolCall("zoom", {"bbox": [0, 0, 9]}), 0.4),
        (ToolCall("zoom", {"bbox": [300, 300, 200, 200]}), 0.6),  # inverted: runs, then errors
        (ToolCall("zoom", {"image": "nope", "bbox": [0, 0, 99, 99]}), 0.6),
        (ToolCall("zoom", {"bbox": [0, 0, 99, 99]}), 1.0),
    ]
    for call, want in cases:
        result = dispatch(call, tools, env)
        assert call_quality(call, tools, result) == pytest.approx(want), call
        assert (result.error is None) == (want == 1.0)


def test_unknown_tool_lists_valid_ones(tools):
    result = dispatch(ToolCall("magnify", {}), tools, env_1001())
    assert result.error == "unknown tool 'magnify'; valid tools: crop, zoom, retrieve_view"
    assert dispatch(None, tools, env_1001()).error == "no tool call found"


class Boom(Tool):
    name = "boom"
    parameters = {"type": "object", "properties": {"mode": {"type": "string"}}}

    def run(self, args, env):
        if args.get("mode") == "wrong type":
            return "not a result"
        raise RuntimeError("kaput")


def test_tool_exceptions_become_errors():
    tools = {"boom": Boom()}
    result = dispatch(ToolCall("boom", {}), tools, ToolEnv())
    assert result.error == "boom failed: RuntimeError: kaput"
    assert call_quality(ToolCall("boom", {}), tools, result) == pytest.approx(0.6)
    assert "returned str, not a ToolResult" in dispatch(ToolCall("boom", {"mode": "wrong type"}),
                                                        tools, ToolEnv()).error
    assert Boom()({}, ToolEnv()).error == "boom failed: RuntimeError: kaput"  # direct call too


def test_fuzzed_calls_never_raise(tools):
    rng = random.Random(0)
    good = [HERMES.render_call(ToolCall("zoom", ZOOM_ARGS)),
            DRIVE.render_call(ToolCall("crop", {"bbox": [10, 10, 200, 200]}))]
    env = env_1001()
    for _ in range(400):
        text = rng.choice(good)
        i, j = sorted(rng.sample(range(len(text) + 1), 2))
        variants = [text[:i], text[i:], text[:i] + text[j:],
                    text[:i] + rng.choice('{}[]",:<>/') + text[i:]]
        for v in variants:
            for fmt in FORMATS.values():
                got = fmt.parse(v)
                result = dispatch(got, tools, env)
                assert isinstance(result, ToolResult)
                assert 0.0 <= call_quality(got, tools, result) <= 1.0


# ---------------------------------------------------------------- prompts
def test_tool_specs_and_prompts(tools):
    specs = render_tool_specs(tools)
    assert [s["function"]["name"] for s in specs] == ["crop", "zoom", "retrieve_view"]
    assert all(s["type"] == "function" and s["function"]["parameters"]["type"] == "object"
               for s in specs)
    assert render_tool_specs(list(tools.values())) == specs
    drive = tools_system_prompt(tools, "drive")
    assert "<call_tool><tool_name>NAME</tool_name><params>" in drive
    assert all(f"- {n}: " in drive for n in tools)
    hermes = tools_system_prompt(tools)
    assert "<tools>\n" in hermes and "<tool_call></tool_call>" in hermes
    assert '"name": "retrieve_view"' in hermes


# ---------------------------------------------------------------- hybrid thinking
def test_modes_answers_and_stages():
    assert parse_mode("<think_with_tools><description>x") == "tool"
    assert parse_mode("  <think_no_tools>...</think_no_tools>") == "text"
    assert parse_mode("<think_no_tools> not <think_with_tools>") == "text"  # the first one wins
    assert parse_mode("no tag") is None
    assert set(MODE_HINT) == {"tool", "text"}
    assert "<think_with_tools>" in MODE_HINT["tool"] and "<think_no_tools>" in MODE_HINT["text"]
    assert parse_answer("<answer>1</answer> <answer> 7 </answer>") == "7"
    assert parse_answer("<answer>unclosed") is None
    assert parse_answer("<meta actions>[a]</meta actions>", "meta actions") == "[a]"
    # the trajectory's answer: the last block of any domain's tag
    assert parse_final("<answer>1</answer><meta actions> [b] </meta actions>") == "[b]"
    assert parse_final("<meta actions>[b]</meta actions> <answer>2</answer>") == "2"
    assert parse_final("<meta actions>[b]") is None
    full = "<description>a</description><reasoning>b</reasoning><prediction>c</prediction>"
    assert stage_tags(full) == list(THINK_TAGS)
    assert stage_tags("<prediction>c</prediction><description>a</description>") == \
        ["prediction", "description"]
    assert stage_tags("<reasoning>unclosed <description>a</description>") == ["description"]

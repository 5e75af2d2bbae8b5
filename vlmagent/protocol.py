"""Tool-call wire formats, tool dispatch and the hybrid-thinking tags (DriveAgent-R1).

Everything the model writes is untrusted: parsing returns a ParseError instead of raising, and
dispatch turns every failure (bad JSON, unknown tool, bad arguments, a crashing tool) into a
ToolResult(error=...) the model reads in the next turn. Episodes never end on a bad call.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vlmagent.tools.base import Tool, ToolEnv
from vlmagent.types import ToolCall, ToolResult

IMAGE = "<image>"  # one per image in a tool result; the agent swaps in the vision tokens


@dataclass
class ParseError:
    """The model tried to call a tool but the call is malformed; `message` is model-readable."""

    message: str
    raw: str = ""


Parsed = ToolCall | ParseError | None


def _excerpt(text: str, pos: int, width: int = 20) -> str:
    return text[max(0, pos - width):pos + width].replace("\n", " ")


def _json_object(body: str, what: str) -> dict[str, Any] | str:
    """Parse `body` as a JSON object, or say (model-readably) why it is not one."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        return (f"broken JSON in {what}: {e.msg} at line {e.lineno} column {e.colno} "
                f"(near {_excerpt(body, e.pos)!r})")
    if not isinstance(value, dict):
        kind = type(value).__name__.replace("NoneType", "null").replace("dict", "object")
        return f"{what} must be a JSON object, got {kind} {str(value)[:40]}"
    return value


def _last_block(text: str, open_tag: str, close_tag: str) -> tuple[str, str] | ParseError | None:
    """(body, raw) of the last open..close block; ParseError if unclosed; None if absent."""
    start = text.rfind(open_tag)
    if start < 0:
        if close_tag in text:
            raw = text[:text.find(close_tag) + len(close_tag)][-200:]
            return ParseError(f"found {close_tag} without an opening {open_tag}", raw)
        return None
    end = text.find(close_tag, start + len(open_tag))
    if end < 0:
        return ParseError(f"unclosed {open_tag}: end the call with {close_tag}", text[start:])
    return text[start + len(open_tag):end], text[start:end + len(close_tag)]


class Hermes:
    """Qwen/Hermes: <tool_call>{"name": ..., "arguments": {...}}</tool_call> (the default)."""

    name = "hermes"
    start, stop = "<tool_call>", "</tool_call>"
    example = ('<tool_call>\n{"name": "zoom", "arguments": {"bbox": [10, 20, 110, 90]}}\n'
               '</tool_call>')

    def parse(self, text: str) -> Parsed:
        """The last call in `text` (which must include the stop string), an error, or None."""
        block = _last_block(text, self.start, self.stop)
        if not isinstance(block, tuple):
            return block
        body, raw = block
        if not body.strip():
            return ParseError(f"empty {self.start}: write {self.example}", raw)
        obj = _json_object(body, self.start)
        if isinstance(obj, str):
            return ParseError(obj, raw)
        name = obj.get("name")
        if not isinstance(name, str) or not name.strip():
            return ParseError(f'the call needs a non-empty "name" string, e.g. {self.example}', raw)
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models JSON-encode the arguments (OpenAI style)
            args = _json_object(args, '"arguments"') if args.strip() else {}
            if isinstance(args, str):
                return ParseError(args, raw)
        if not isinstance(args, dict):
            return ParseError(f'"arguments" must be a JSON object, got {json.dumps(args)[:40]}',
                              raw)
        return ToolCall(name.strip(), args, raw)

    def render_call(self, call: ToolCall) -> str:
        body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        return f"{self.start}\n{body}\n{self.stop}"

    def render_result(self, text: str, n_images: int = 0) -> str:
        parts = [text] if text else []
        parts += [IMAGE] * n_images
        return "<tool_response>\n" + "\n".join(parts) + "\n</tool_response>"


class Drive:
    """DriveAgent-R1: <call_tool><tool_name>NAME</tool_name><params>{json}</params></call_tool>."""

    name = "drive"
    start, stop = "<call_tool>", "</call_tool>"
    example = ('<call_tool><tool_name>zoom</tool_name><params>{"bbox": [10, 20, 110, 90]}'
               '</params></call_tool>')

    def parse(self, text: str) -> Parsed:
        """The last call in `text` (which must include the stop string), an error, or None."""
        block = _last_block(text, self.start, self.stop)
        if not isinstance(block, tuple):
            return block
        body, raw = block
        name = _last_block(body, "<tool_name>", "</tool_name>")
        if name is None:
            return ParseError(f"missing <tool_name>: write {self.example}", raw)
        if isinstance(name, ParseError):
            return ParseError(name.message, raw)
        if not name[0].strip():
            return ParseError(f"empty <tool_name>: write {self.example}", raw)
        params = _last_block(body, "<params>", "</params>")
        args: dict[str, Any] | str = {}
        if isinstance(params, ParseError):
            return ParseError(params.message, raw)
        if params is not None and params[0].strip():
            args = _json_object(params[0], "<params>")
            if isinstance(args, str):
                return ParseError(args, raw)
        return ToolCall(name[0].strip(), args, raw)

    def render_call(self, call: ToolCall) -> str:
        params = json.dumps(call.arguments, ensure_ascii=False)
        return (f"{self.start}<tool_name>{call.name}</tool_name><params>{params}</params>"
                f"{self.stop}")

    def render_result(self, text: str, n_images: int = 0) -> str:
        return "<tool_result> " + " ".join([text] * bool(text) + [IMAGE] * n_images) + \
            " </tool_result>"


Format = Hermes | Drive
FORMATS: dict[str, Format] = {"hermes": Hermes(), "drive": Drive()}


def get_format(fmt: str | Format) -> Format:
    """A format by name (or pass one through); an unknown name lists the valid ones."""
    if not isinstance(fmt, str):
        return fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown tool-call format {fmt!r} (valid: {', '.join(FORMATS)})")
    return FORMATS[fmt]


# ---------------------------------------------------------------- prompts
def _tool_list(tools: Mapping[str, Tool] | Iterable[Tool]) -> list[Tool]:
    return list(tools.values()) if isinstance(tools, Mapping) else list(tools)


def render_tool_specs(tools: Mapping[str, Tool] | Iterable[Tool]) -> list[dict[str, Any]]:
    """OpenAI-style function specs for a chat template's `tools=` argument."""
    return [t.spec() for t in _tool_list(tools)]


def tools_system_prompt(tools: Mapping[str, Tool] | Iterable[Tool],
                        fmt: str | Format = "hermes") -> str:
    """System-prompt text that teaches the call format (for drive, templates do not render it)."""
    fmt = get_format(fmt)
    tools = _tool_list(tools)
    if fmt.name == "hermes":  # the wording of Qwen2.5's chat template
        specs = "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in tools)
        return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n"
                f"<tools>\n{specs}\n</tools>\n\nFor each function call, return a json object "
                "with function name and arguments within <tool_call></tool_call> XML tags:\n"
                '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
                "</tool_call>")
    lines = ["# Tools", "", "You can call tools to look closer at the images before you answer.",
             "Available tools:"]
    for t in tools:
        lines.append(f"- {t.name}: {t.description}")
        lines.append(f"  params (JSON schema): {json.dumps(t.parameters, ensure_ascii=False)}")
    lines += ["", "To call a tool, write exactly:",
              "<call_tool><tool_name>NAME</tool_name><params>{JSON object}</params></call_tool>",
              "and stop. The result comes back as <tool_result> ... </tool_result>, with any new "
              "image. One call at a time; boxes are in pixels of the image as you see it."]
    return "\n".join(lines)


# ---------------------------------------------------------------- hybrid thinking
MODE_TAGS = {"tool": "think_with_tools", "text": "think_no_tools"}
MODE_HINT = {
    "tool": "Think with tools: begin your reply with <think_with_tools> and inspect the image "
            "with a tool before you answer.",
    "text": "Think without tools: begin your reply with <think_no_tools> and answer directly, "
            "without calling any tool.",
}
THINK_TAGS = ("description", "reasoning", "prediction")


def parse_mode(text: str) -> str | None:
    """"tool" or "text" from the first mode opening tag in `text`; None if there is none."""
    found = [(text.find(f"<{tag}>"), mode) for mode, tag in MODE_TAGS.items()]
    found = [(pos, mode) for pos, mode in found if pos >= 0]
    return min(found)[1] if found else None


def parse_answer(text: str, tag: str = "answer") -> str | None:
    """Content of the last <tag>...</tag> (stripped), or None."""
    hits = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, flags=re.S)
    return hits[-1].strip() if hits else None


ANSWER_TAGS = ("answer", "meta actions")  # QA domains; driving (DriveAgent-R1)


def parse_final(text: str) -> str | None:
    """Content of the last answer block of any domain's tag (ANSWER_TAGS), or None."""
    hits = [(m.start(), m.group(2)) for tag in ANSWER_TAGS
            for m in re.finditer(rf"<({re.escape(tag)})>(.*?)</\1>", text, flags=re.S)]
    return max(hits)[1].strip() if hits else None


def stage_tags(text: str) -> list[str]:
    """The stage tags (<description>, <reasoning>, <prediction>) that are opened and closed,
    in the order they appear; the format reward compares this with THINK_TAGS."""
    pos = []
    for tag in THINK_TAGS:
        start = text.find(f"<{tag}>")
        if start >= 0 and text.find(f"</{tag}>", start) >= 0:
            pos.append((start, tag))
    return [tag for _, tag in sorted(pos)]


# ---------------------------------------------------------------- dispatch
def dispatch(call: Parsed, tools: Mapping[str, Tool], env: ToolEnv) -> ToolResult:
    """Run a parsed call. Every failure becomes ToolResult(error=...); never raises."""
    if call is None:
        return ToolResult(error="no tool call found")
    if isinstance(call, ParseError):
        return ToolResult(error=f"could not parse the tool call: {call.message}")
    tool = tools.get(call.name)
    if tool is None:
        return ToolResult(error=f"unknown tool {call.name!r}; valid tools: "
                                f"{', '.join(tools) or 'none'}")
    try:
        err = tool.check(call.arguments)
        if err:
            return ToolResult(error=f"invalid arguments for {call.name}: {err}")
        result = tool.run(call.arguments, env)
    except Exception as e:  # a tool bug must not end the episode
        return ToolResult(error=f"{call.name} failed: {type(e).__name__}: {e}")
    if not isinstance(result, ToolResult):
        return ToolResult(error=f"{call.name} failed: returned {type(result).__name__}, "
                                "not a ToolResult")
    return result


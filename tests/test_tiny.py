"""vlmagent.tiny: tiny random Qwen-VL models built offline, reloaded through the Auto classes."""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmagent import tiny

FAMILIES = list(tiny.TINY_FAMILIES)


@pytest.fixture(scope="module")
def built(tiny_factory) -> dict[str, Path]:
    """The session's tiny models (seed 0, default budget), one per family; read-only."""
    return {f: tiny_factory(family=f) for f in FAMILIES}


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _inputs(processor, side: int) -> dict:
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "How many red circles?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[_image(2 * side, side)], return_tensors="pt")


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_through_auto_classes_gives_identical_logits(built, family) -> None:
    model, processor = tiny.make_tiny(family, seed=0)
    loaded = AutoModelForImageTextToText.from_pretrained(built[family])
    loaded_proc = AutoProcessor.from_pretrained(built[family])
    assert type(loaded) is type(model) and type(loaded_proc) is type(processor)
    side = loaded.config.vision_config.patch_size * 2
    inputs = _inputs(loaded_proc, side)
    assert torch.equal(inputs["input_ids"], _inputs(processor, side)["input_ids"])
    n_pad = int((inputs["input_ids"] == loaded.config.image_token_id).sum())
    assert n_pad == 2  # (2 side x 1 side) pixels / (patch * merge)^2
    with torch.no_grad():
        a = model(**inputs).logits
        b = loaded.eval()(**inputs).logits
    assert a.shape[-1] >= len(loaded_proc.tokenizer)
    assert torch.equal(a, b)
    # transformers' own generate runs on it (mrope positions, cache)
    out = loaded.generate(**inputs, max_new_tokens=4, do_sample=False)
    n = inputs["input_ids"].shape[1]
    assert n < out.shape[1] <= n + 4 and torch.equal(out[:, :n], inputs["input_ids"])


def test_builds_are_deterministic_per_seed(built, tmp_path: Path) -> None:
    def digests(d: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}

    again = digests(tiny.build_tiny(tmp_path / "a", family="qwen2_5_vl", seed=0))
    other = digests(tiny.build_tiny(tmp_path / "b", family="qwen2_5_vl", seed=1))
    first = digests(built["qwen2_5_vl"])
    assert again == first
    assert {k for k in first if first[k] != other[k]} == {"model.safetensors"}


def test_family_settings(built) -> None:
    for family, patch in [("qwen2_vl", 14), ("qwen2_5_vl", 14), ("qwen3_vl", 16)]:
        model = AutoModelForImageTextToText.from_pretrained(built[family])
        proc = AutoProcessor.from_pretrained(built[family])
        text = model.config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
        assert text.rope_parameters["rope_theta"] <= 100
        assert model.config.vision_config.patch_size == patch
        assert proc.image_processor.patch_size == patch
        assert model.config.vision_config.depth == 2 and text.num_hidden_layers == 2
    with pytest.raises(ValueError, match="unknown family"):
        tiny.build_tiny("unused", family="llava")


def test_special_and_protocol_tags_are_single_tokens(built) -> None:
    tok = AutoProcessor.from_pretrained(built["qwen2_5_vl"]).tokenizer
    for t in tiny.SPECIAL_TOKENS + tiny.TOOL_TOKENS + tiny.PROTOCOL_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, t
        assert tok.decode(ids) == t
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = ('<think_with_tools><call_tool><tool_name>zoom</tool_name><params>{"bbox": '
            '[1, 2, 30, 40]}</params></call_tool></think_with_tools><answer>3</answer>')
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # protocol tags survive skip_special_tokens; Qwen's special tokens do not
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text


def test_chat_template_renders_tools_images_and_tool_turns(built) -> None:
    tok = AutoProcessor.from_pretrained(built["qwen2_5_vl"]).tokenizer
    tools = [{"type": "function", "function": {"name": "zoom", "description": "Zoom in",
                                               "parameters": {"type": "object"}}}]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count."}]},
        {"role": "assistant", "content": "Zooming.",
         "tool_calls": [{"type": "function",
                         "function": {"name": "zoom", "arguments": {"bbox": [1, 2, 3, 4]}}}]},
        {"role": "tool", "content": [{"type": "text", "text": "done"}, {"type": "image"}]},
    ]
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools")
    assert '<tools>\n{"type": "function", "function": {"name": "zoom"' in text
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Count.<|im_end|>" in text
    assert ('<tool_call>\n{"name": "zoom", "arguments": {"bbox": [1, 2, 3, 4]}}\n</tool_call>'
            '<|im_end|>') in text
    assert ("<|im_start|>user\n<tool_response>\ndone<|vision_start|><|image_pad|><|vision_end|>"
            "\n</tool_response><|im_end|>") in text
    assert text.endswith("<|im_start|>assistant\n")
    plain = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "hi"}], tokenize=False)
    assert plain == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_cli_tiny(tmp_path: Path, capsys) -> None:
    ap = argparse.ArgumentParser()
    tiny.add_arguments(ap)
    args = ap.parse_args(["--out", str(tmp_path / "m"), "--family", "qwen3_vl"])
    assert tiny.cli_tiny(args) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert str(tmp_path / "m") in capsys.readouterr().out

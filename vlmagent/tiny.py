"""Build a tiny random Qwen-VL model + processor offline, for tests, the demo and CI.

    path = build_tiny("out/tiny", family="qwen2_5_vl", seed=0)
    model = AutoModelForImageTextToText.from_pretrained(path)   # no network
    processor = AutoProcessor.from_pretrained(path)

The tokenizer is a small byte-level BPE trained here on generated text (English words, digits,
JSON punctuation, colour and shape names) with the Qwen special tokens and the agent protocol
tags as single added tokens, and a Qwen2.5-VL-style chat template with tool support.
Everything is deterministic: the same family and seed give the same files.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from vlmagent.policy import FAMILIES

# The families this module builds: those Policy loads (policy.FAMILIES owns the list) except
# qwen3_vl_moe, for which there is no tiny builder (`_config` knows the three dense ones).
TINY_FAMILIES = tuple(f for f in FAMILIES if f != "qwen3_vl_moe")

# Qwen's special tokens (skipped when decoding with skip_special_tokens=True).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Added, non-special tokens: kept by decode, one token each so a tiny model can learn them.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
PROTOCOL_TAGS = ["think_with_tools", "think_no_tools", "description", "reasoning", "prediction",
                 "answer", "call_tool", "tool_name", "params", "tool_result"]
PROTOCOL_TOKENS = [t for tag in PROTOCOL_TAGS for t in (f"<{tag}>", f"</{tag}>")]

# The Qwen2 pre-tokenizer split (digits one by one, words with their leading space).
_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                      r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

_WORDS = """the a an of to and in is it that for on with as at by from this be are was or not
what which where when how why who image picture photo left right top bottom middle center corner
zoom crop tool call result answer question object objects count many number there here see look
region box area inside outside above below near far large small big tiny red green blue yellow
orange purple pink brown black white gray grey cyan magenta circle square triangle rectangle star
ellipse line dot shape shapes colour color text label car cars truck bus pedestrian road lane
traffic light sign stop speed keep accelerate decelerate straight turn front back camera view
depth detect detection frame current ago seconds meters think thinking reasoning description
prediction first then next finally because so therefore yes no true false null none name params
args arguments camera bbox x y width height page site html css button click form menu title
header footer section div span style color font size margin padding layout please describe show
find tell me you i we they my your our one two three four five six seven eight nine ten
system user assistant tool tools function functions json object call calls helpful""".split()
_COLOURS = "red green blue yellow orange purple pink brown black white gray cyan magenta".split()
_SHAPES = "circle square triangle rectangle star ellipse cross diamond hexagon".split()


def _corpus(rng: random.Random, lines: int = 3000) -> list[str]:
    """Generated text covering words, digits, JSON, colours/shapes and chat scaffolding."""
    out = []
    for i in range(lines):
        kind = i % 5
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        if kind == 0:
            out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ":"]))
        elif kind == 1:
            box = [rng.randint(0, 1000) for _ in range(4)]
            args = {"camera": rng.choice(["front", "back", "left"]), "bbox": box,
                    "colour": rng.choice(_COLOURS), "ok": rng.choice([True, False, None])}
            out.append(json.dumps({"name": rng.choice(["zoom", "crop", "depth"]),
                                   "arguments": args}))
        elif kind == 2:
            out.append(f"There are {rng.randint(0, 99)} {rng.choice(_COLOURS)} "
                       f"{rng.choice(_SHAPES)}s at ({rng.randint(0, 640)}, {rng.randint(0, 480)}).")
        elif kind == 3:
            out.append(f"user\n{' '.join(words)}\nassistant\n"
                       f"{rng.random():.4f} {rng.randint(0, 10**6)}")
        else:
            out.append("\n".join(" ".join(rng.choice(_WORDS) for _ in range(5)) for _ in range(3)))
    return out


# Tokenizer corpora: "base" (the agent protocol's words) and "web", which adds the lines of
# the web-generation experts' projects (web/expert.py), so HTML/CSS/TSX pieces are one token
# each, as in a real Qwen vocabulary, and a tiny model writes a page in a few hundred tokens.
CORPORA = ("base", "web")
VOCAB = {"base": 1536, "web": 3072}


def build_tokenizer(vocab_size: int | None = None, corpus: str = "base"):
    """A small byte-level BPE with Qwen special tokens, wrapped as transformers' Qwen2Tokenizer."""
    from transformers import Qwen2Tokenizer

    if corpus not in CORPORA:
        raise ValueError(f"unknown tokenizer corpus {corpus!r} (valid: {', '.join(CORPORA)})")
    lines = _corpus(random.Random(1234))
    if corpus == "web":
        from vlmagent.web.expert import web_corpus
        lines += web_corpus()

    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size or VOCAB[corpus], min_frequency=2,
                         show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    model = tok.model
    vocab = model.get_vocab() if hasattr(model, "get_vocab") else tok.get_vocab()
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               model_max_length=32768, errors="replace")
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False)
                                       for t in SPECIAL_TOKENS if t not in
                                       ("<|endoftext|>", "<|im_end|>")]},
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                          for t in TOOL_TOKENS + PROTOCOL_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# Qwen2.5 tool-calling template + Qwen2-VL image/video content items.
CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is none -%}
{%- else -%}{%- for item in content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif item.type == 'video' or 'video' in item -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in item -%}{{ item.text }}
{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- render(messages[0].content) }}
{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n'
    + 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and '
    + 'arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n'
    + '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + render(messages[0].content) + '<|im_end|>\n' }}
{%- else %}
{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first %}
{%- elif message.role == 'assistant' and message.tool_calls %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\n' + render(message.content) }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": '
    + (tool_call.arguments | tojson) + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
{{- '<|im_start|>user' }}
{%- endif %}
{{- '\n<tool_response>\n' + render(message.content) + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- else %}
{{- '<|im_start|>' + message.role + '\n' + render(message.content) + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""


def _config(family: str, tokenizer):
    """A tiny config: vision depth 2 (hidden 64), LM 2 layers (hidden 128, head_dim 32)."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    vocab = (len(tokenizer) + 63) // 64 * 64
    text = dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                tie_word_embeddings=False)
    # head_dim 32: mrope_section (temporal, height, width) must sum to head_dim / 2 = 16.
    if family == "qwen3_vl":
        text.update(head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 50.0,
                                                  "mrope_section": [6, 5, 5],
                                                  "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=128,
                      num_position_embeddings=256, deepstack_visual_indexes=[0])
        text.pop("bos_token_id"), text.pop("eos_token_id")
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                             **ids)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 50.0,
                               "mrope_section": [4, 6, 6]}
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                             **ids)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=128,
                  window_size=112, fullatt_block_indexes=[1], tokens_per_second=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            **ids)


def _processor(family: str, tokenizer, min_pixels: int, max_pixels: int):
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    if family == "qwen3_vl":
        image = Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2,
                                      image_mean=[0.5] * 3, image_std=[0.5] * 3)
        video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, image_mean=[0.5] * 3,
                                      image_std=[0.5] * 3)
        return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                chat_template=CHAT_TEMPLATE)
    image = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2)
    cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(image_processor=image, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
               chat_template=CHAT_TEMPLATE)


def make_tiny(family: str = "qwen2_5_vl", seed: int = 0, min_pixels: int = 28 * 28,
              max_pixels: int = 448 * 448, corpus: str = "base"):
    """A tiny random `family` model (float32, eval mode) and its processor, in memory; `corpus`
    picks the tokenizer's training text (CORPORA)."""
    from transformers import AutoModelForImageTextToText, GenerationConfig

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(TINY_FAMILIES)}")
    tokenizer = build_tokenizer(corpus=corpus)
    config = _config(family, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id)
    return model.eval(), _processor(family, tokenizer, min_pixels, max_pixels)


def build_tiny(out_dir: str | Path, family: str = "qwen2_5_vl", seed: int = 0,
               min_pixels: int = 28 * 28, max_pixels: int = 448 * 448,
               corpus: str = "base") -> Path:
    """Write a tiny random `family` model + processor to `out_dir` (save_pretrained layout).

    The processor's pixel budget (`size` shortest_edge/longest_edge) is min_pixels/max_pixels.
    """
    model, processor = make_tiny(family, seed, min_pixels, max_pixels, corpus)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:  # for scripts embedding the builder
    """Flags of `vlmagent tiny`."""
    ap.add_argument("--out", required=True, help="folder to write the model and processor to")
    ap.add_argument("--family", default="qwen2_5_vl", choices=TINY_FAMILIES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", default="base", choices=CORPORA,
                    help="tokenizer training text: base, or web (adds HTML/CSS/TSX for webgen)")


def cli_tiny(args: argparse.Namespace) -> int:
    """`vlmagent tiny --out DIR [--family F] [--seed N]`: build and print the folder."""
    print(build_tiny(args.out, family=args.family, seed=args.seed, corpus=args.corpus))
    return 0

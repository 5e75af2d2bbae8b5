"""Torch helpers for policy.py: image dedupe, padding, the image token check, sampling, LoRA
(peft) wrapping, merged LoRA weights, and loading and saving the model.

No transformers or peft import at module level: they are imported inside `load_model` and
`add_lora`, when a model is loaded or adapters are made.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.checkpoint import checkpoint

from vlmagent.errors import UsageError
from vlmagent.images import image_key

if TYPE_CHECKING:
    from vlmagent.config import LoraSettings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "auto": "auto"}


def torch_dtype(name: str) -> torch.dtype | str:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def dedupe_images(images: list) -> tuple[list, list[int]]:
    """Unique images by content, and for every image the index of its unique copy."""
    seen: dict[str, int] = {}
    uniq: list = []
    where = []
    for im in images:
        key = image_key(im)
        if key not in seen:
            seen[key] = len(uniq)
            uniq.append(im)
        where.append(seen[key])
    return uniq, where


def pad_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists -> (input_ids [B, T], attention_mask [B, T])."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        if s:
            ids[b, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[b, width - len(s):] = 1
    return ids, mask


def pad_runs(ids: torch.Tensor, token_id: int) -> list[tuple[int, int]]:
    """(start, length) of each contiguous run of `token_id` in a 1-D tensor."""
    hit = torch.cat([torch.zeros(1, dtype=torch.int8, device=ids.device),
                     (ids == token_id).to(torch.int8),
                     torch.zeros(1, dtype=torch.int8, device=ids.device)])
    edges = torch.diff(hit)
    starts = (edges == 1).nonzero().flatten().tolist()
    ends = (edges == -1).nonzero().flatten().tolist()
    return [(s, e - s) for s, e in zip(starts, ends)]


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None,
                banned: tuple[int, ...] | list[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row of `logits` [B, V] -> (tokens [B], logps [B]).

    logps are log_softmax(raw logits / temperature) at the picked token (temperature 1 when
    greedy): the behaviour policy's probability, not the top-p-filtered one. `banned` tokens
    (image/video pads) are never picked but stay in the normaliser.
    """
    logits = logits.float()
    pick = logits.clone()
    if banned:
        pick[:, list(banned)] = float("-inf")
    if temperature == 0:
        tokens = pick.argmax(-1)
        logp = torch.log_softmax(logits, -1)
    else:
        logp = torch.log_softmax(logits / temperature, -1)
        probs = torch.softmax(pick / temperature, -1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest set reaching top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def token_logps(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / temperature) at `targets`: [N, V], [N] -> [N], without a full
    [N, V] log-softmax copy."""
    logits = logits.float()
    if temperature not in (0, 1):
        logits = logits / temperature
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)
    return picked - torch.logsumexp(logits, -1)


def chunked_logps(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                  temperature: float, chunk: int = 1024) -> torch.Tensor:
    """token_logps(head(hidden), targets) for hidden [N, H], `chunk` rows at a time; with grad,
    each chunk's logits are recomputed in backward instead of kept ([chunk, V] peak)."""
    def piece(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return token_logps(head(h), t, temperature)

    parts = []
    for i in range(0, hidden.shape[0], chunk):
        h, t = hidden[i:i + chunk], targets[i:i + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(piece, h, t, use_reentrant=False))
        else:
            parts.append(piece(h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0)


def merged_state_dict(model: torch.nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """State dict of a peft-injected model with LoRA deltas folded into the base weights, keyed
    like the plain model. The model itself is left untouched (no merge/unmerge round trip)."""
    sd = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key or "lora_magnitude" in key:
            continue
        sd[key.replace(".base_layer.", ".")] = value
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            if adapter not in getattr(module, "lora_A", {}):
                continue
            key = f"{name}.weight"
            sd[key] = (sd[key] + module.get_delta_weight(adapter).to(sd[key].dtype)).detach()
    return sd


# ---------------------------------------------------------------- peft
def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if is_peft(model) else model


def add_lora(model: torch.nn.Module, lora: LoraSettings) -> torch.nn.Module:
    """peft adapters on the language model's `target_modules` (and, with train_vision, on
    every linear layer of the vision tower)."""
    import re

    from peft import LoraConfig, get_peft_model

    suffixes = "|".join(re.escape(t) for t in lora.target_modules)
    pattern = rf".*language_model\.(?:.*\.)?(?:{suffixes})"
    if lora.train_vision:
        names = [re.escape(name) for name, mod in model.named_modules()
                 if ".visual." in f".{name}." and isinstance(mod, torch.nn.Linear)]
        pattern = f"(?:{pattern})|(?:{'|'.join(names)})"
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=pattern, bias="none")
    return get_peft_model(model, cfg)


def gathered_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict's entries read from the modules as they are: under FSDP with the weights
    gathered (train/distributed.gather_weights) these are the whole tensors, while
    model.state_dict() would run FSDP's hook that puts the shards back."""
    sd = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        pre = f"{mname}." if mname else ""
        for n, p in mod._parameters.items():
            if p is not None:
                sd[pre + n] = p.detach()
        for n, b in mod._buffers.items():
            if b is not None and n not in mod._non_persistent_buffers_set:
                sd[pre + n] = b
    return sd


# ---------------------------------------------------------------- image token invariants
class ImageTokenError(ValueError):
    """Image pad tokens disagree with the images (count, split or truncated run)."""


def check_image_tokens(input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None,
                       sample_ids: list[str], n_images_per_sample: list[int], *, merge_size: int,
                       image_token_id: int, video_token_id: int, vision_start_id: int,
                       vision_end_id: int) -> None:
    """Policy.check_invariants, with the model's spatial merge size and special token ids."""
    merge2 = merge_size ** 2
    counts = [] if image_grid_thw is None else (image_grid_thw.prod(-1) // merge2).tolist()
    if sum(n_images_per_sample) != len(counts):
        raise ImageTokenError(f"samples {list(sample_ids)} hold {sum(n_images_per_sample)} "
                              f"images but image_grid_thw has {len(counts)} rows")
    offset = 0
    for b, (sid, n) in enumerate(zip(sample_ids, n_images_per_sample)):
        want = counts[offset:offset + n]
        offset += n
        ids = input_ids[b]
        runs = pad_runs(ids, image_token_id)
        have = sum(length for _, length in runs)
        if have != sum(want):
            raise ImageTokenError(
                f"sample {sid}: {have} image pad tokens but image_grid_thw implies "
                f"{sum(want)} for {n} image(s) (per image {want})")
        if [length for _, length in runs] != want:
            raise ImageTokenError(
                f"sample {sid}: image pad runs {[length for _, length in runs]} do not match "
                f"the {n} image(s) ({want} tokens each): an image was split or truncated")
        for k, (start, length) in enumerate(runs):
            end = start + length
            if (start == 0 or ids[start - 1] != vision_start_id or end >= len(ids)
                    or ids[end] != vision_end_id):
                raise ImageTokenError(f"sample {sid}: image {k} ({length} pad tokens) is not "
                                      "enclosed by <|vision_start|> ... <|vision_end|>")
        if bool((ids == video_token_id).any()):
            raise ImageTokenError(f"sample {sid}: video pad tokens are not supported")


# ---------------------------------------------------------------- loading and saving
def load_model(path: str | Path, dtype: str, device: str, lora: LoraSettings | None,
               adapter: str | None, gradient_checkpointing: bool) -> tuple[torch.nn.Module, Any]:
    """(model, processor) for Policy.from_pretrained, which documents the arguments."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch_dtype(dtype))
    except OSError as e:
        if Path(path).exists():
            raise
        # not a folder, and the hub (or its cache, offline) has no such model: say which path
        # and how to get one, instead of transformers' traceback about the hub connection
        raise UsageError(
            f"no model at {str(path)!r}: no such folder, and no hub model of that name could "
            f"be loaded ({str(e).splitlines()[0]}). Build a tiny offline model with "
            f"`vlmagent tiny --out {path}`, or set policy.path to a model folder or hub id"
        ) from None
    model.to(resolve_device(device))
    processor = AutoProcessor.from_pretrained(str(path))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=lora is not None)
    elif lora is not None:
        model = add_lora(model, lora)
    if lora is not None and not lora.train_vision:
        for p in unwrap(model).model.visual.parameters():
            p.requires_grad_(False)
    if gradient_checkpointing:
        core = unwrap(model)
        if hasattr(core, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            core.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            core.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        # transformers checkpoints only in training mode; Qwen-VL has no dropout, so the
        # numbers are those of eval mode (generate() switches to eval and back anyway)
        model.train()
    return model, processor


def save_model(model: torch.nn.Module, processor: Any, out_dir: str | Path, merged: bool,
               gathered: bool) -> Path:
    """Policy.save_pretrained's files; `gathered`: FSDP weights are gathered whole just now."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if is_peft(model) and not merged:
        model.save_pretrained(str(out), safe_serialization=True)
    elif is_peft(model):
        unwrap(model).save_pretrained(str(out), state_dict=merged_state_dict(unwrap(model)))
    elif gathered:  # FSDP: state_dict() would reshard; the gathered tensors are read as they are
        model.save_pretrained(str(out), state_dict=gathered_state(model))
    else:
        model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out

"""The Qwen-VL policy over transformers: load (local path or hub id), LoRA via peft, batched
generation returning exact token ids + sampled logps, and logps with grad for training.

    policy = Policy.from_pretrained("out/tiny", lora=LoraSettings())
    ids = policy.chat_tokens([{"role": "user", "content": [{"type": "image", "image": img},
                                                            {"type": "text", "text": "Count."}]}],
                             add_generation_prompt=True)
    [gen] = policy.generate([Context(ids, [img], "s0")], max_new_tokens=64, seed=0)
    [lp] = policy.logprobs([Context(ids + gen.token_ids, [img], "s0")])
    # lp[-len(gen.token_ids):] equals gen.logps

Images arrive already resized to what the model sees (`seen_size`: the rule of images.py with
the budget of this model's processor, `budget`), so the image processor never resizes them and
tool boxes stay in that frame.
Every forward pass first runs `check_invariants` (image pad tokens vs image_grid_thw).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlmagent.config import LoraSettings, PolicyConfig
from vlmagent.images import Budget, Size
from vlmagent.modelio import ImageTokenError as ImageTokenError  # re-exported: callers catch it
from vlmagent.modelio import (
    check_image_tokens,
    chunked_logps,
    dedupe_images,
    load_model,
    pad_left,
    sample_next,
    save_model,
    unwrap,
)

# The model types Policy loads (config.model_type); tiny.py builds a subset of them.
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


@dataclass
class Context:
    """A token sequence and its images, in the order of their <|image_pad|> runs."""

    token_ids: list[int]
    images: list[Image.Image] = field(default_factory=list)
    id: str = ""


@dataclass
class Generation:
    token_ids: list[int]  # new tokens only, including the stop token (eos or stop string end)
    logps: list[float]  # log_softmax(raw logits / temperature) of each sampled token
    text: str  # decode of token_ids without a final eos token; special tokens kept
    stop: str  # "eos", the stop string that matched, or "length"


class Policy:
    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        self.model = model
        self.processor = processor
        # Set while a training stage runs under accelerate (DDP/FSDP): the wrapped TrainForward
        # that logprobs/log_dists with grad go through, so the wrapper's hooks see the weights.
        self.wrapped: torch.nn.Module | None = None
        # FSDP (train/common.py): the sharded TrainForward, kept across stages once sharded;
        # fsdp_gathered is not None while its weights are gathered whole (gather_weights)
        self.fsdp_root: torch.nn.Module | None = None
        self.fsdp_gathered: list[Any] | None = None
        self.fsdp_freeze: tuple[str, ...] = ()
        # Where the vision tower runs and its feature cache (placement.py); None: the plain model.
        self.placement: Any = None
        self.tokenizer = processor.tokenizer
        cfg = self.core.config
        self.family: str = cfg.model_type
        if self.family not in FAMILIES:
            raise ValueError(f"unsupported model type {self.family!r}; valid: {FAMILIES}")
        vision = cfg.vision_config
        self.merge_size: int = vision.spatial_merge_size
        self.patch_size: int = vision.patch_size
        # The processor's budget (its factor and default pixel bounds): the seen-size rule.
        self.budget: Budget = Budget.from_processor(processor)
        if self.budget.factor != self.patch_size * self.merge_size:
            raise ValueError(f"the image processor's patch_size x merge_size ("
                             f"{self.budget.factor}) differs from the vision tower's "
                             f"{self.patch_size} x {self.merge_size}")
        self.image_token_id: int = cfg.image_token_id
        self.video_token_id: int = cfg.video_token_id
        self.vision_start_id: int = cfg.vision_start_token_id
        self.vision_end_id: int = cfg.vision_end_token_id
        eos = getattr(self.core.generation_config, "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids: set[int] = set(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else min(self.eos_ids)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str = "float32", device: str = "cpu",
                        lora: LoraSettings | None = None, adapter: str | None = None,
                        gradient_checkpointing: bool = False) -> Policy:
        """Load through AutoModelForImageTextToText/AutoProcessor. `lora` adds fresh trainable
        adapters, or makes a loaded `adapter` trainable; `adapter` alone loads it frozen.
        `gradient_checkpointing` recomputes each decoder layer in backward (non-reentrant)."""
        return cls(*load_model(path, dtype, device, lora, adapter, gradient_checkpointing))

    @classmethod
    def from_config(cls, cfg: PolicyConfig) -> Policy:
        from vlmagent.placement import make_placement

        policy = cls.from_pretrained(cfg.path, cfg.dtype, cfg.device, cfg.lora, cfg.adapter,
                                     cfg.gradient_checkpointing)
        policy.placement = make_placement(cfg.placement, policy)
        return policy

    @property
    def core(self) -> torch.nn.Module:
        """The transformers model (under any peft wrapper)."""
        return unwrap(self.model)

    @property
    def device(self) -> torch.device:
        """The language model's device (the vision tower may sit elsewhere: placement.py)."""
        return self.core.get_input_embeddings().weight.device

    # ------------------------------------------------------------ images
    @property
    def patch_factor(self) -> int:
        """Pixels per visual token side: patch size x merge size (28 Qwen2/2.5-VL, 32 Qwen3-VL)."""
        return self.budget.factor

    def seen_size(self, w: int, h: int, min_pixels: int | None = None,
                  max_pixels: int | None = None) -> Size:
        """(width, height) the model sees for a w x h image; pixel bounds not given are the
        processor's own."""
        return self.budget.with_pixels(min_pixels, max_pixels).seen_size(w, h)

    def tokens_per_image(self, size: Size) -> int:
        """Image pad tokens for an image of the seen size (w, h)."""
        return self.budget.tokens(size)

    def encode_images(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """Pixel patches for images already at their seen size: {pixel_values, image_grid_thw}."""
        sizes = [im.size for im in images]
        for i, s in enumerate(sizes):
            self.tokens_per_image(s)  # raises on a size the processor would resize
        areas = [w * h for w, h in sizes]
        # Bounds that include every image make smart_resize a no-op for these sizes.
        out = self.processor.image_processor(
            images=[im.convert("RGB") for im in images], return_tensors="pt",
            size={"shortest_edge": min(areas), "longest_edge": max(areas)})
        grid = out["image_grid_thw"]
        want = torch.tensor([[1, h // self.patch_size, w // self.patch_size] for w, h in sizes])
        if not torch.equal(grid.cpu(), want):
            raise RuntimeError(f"image processor resized the images: grid {grid.tolist()}, "
                               f"expected {want.tolist()}")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}

    def image_features(self, enc: dict[str, torch.Tensor]) -> Any:
        """The vision tower on encode_images' output; .pooler_output holds each image's merged
        tokens ([tokens, hidden]), which the language model reads as they are. They are on the
        vision tower's device."""
        dev = next(self.core.model.visual.parameters()).device
        return self.core.model.get_image_features(enc["pixel_values"].to(dev),
                                                  enc["image_grid_thw"].to(dev), return_dict=True)

    def prefetch(self, contexts: list[Context]) -> None:
        """Start encoding the images a later call will take (the next micro-batch): with
        placement.vision=process they are encoded while this process runs the LM. A no-op
        without a placement and for in-process ones."""
        if self.placement is not None:
            self.placement.prefetch(self, [im for c in contexts for im in c.images])

    # ------------------------------------------------------------ text
    def chat_tokens(self, messages: list[dict[str, Any]], tools: list[dict] | None = None,
                    add_generation_prompt: bool = False, continuation: bool = False) -> list[int]:
        """Token ids of `messages` through the chat template, each image pad run expanded to
        its token count. Image items are {"type": "image", "image": PIL image at its seen
        size} (or {"type": "image", "size": (w, h)}). `continuation=True` renders turns that
        continue an existing conversation: no system turn is added (tools are not allowed)."""
        sizes = [_image_size(item) for m in messages if isinstance(m.get("content"), list)
                 for item in m["content"] if _is_image(item)]
        render = self.tokenizer.apply_chat_template
        if continuation:
            if tools:
                raise ValueError("tools go in the first (system) turn, not in a continuation")
            head = [{"role": "system", "content": "S"}]
            prefix = render(head, tokenize=False)
            text = render(head + list(messages), tokenize=False,
                          add_generation_prompt=add_generation_prompt)
            if not text.startswith(prefix):
                raise ValueError("chat template does not render turns as a prefix-stable list")
            text = text[len(prefix):]
        else:
            text = render(list(messages), tools=tools, tokenize=False,
                          add_generation_prompt=add_generation_prompt)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n_pads = sum(1 for t in ids if t == self.image_token_id)
        if n_pads != len(sizes):
            raise ValueError(f"template rendered {n_pads} image placeholders for "
                             f"{len(sizes)} images")
        out: list[int] = []
        it = iter(sizes)
        for t in ids:
            out.extend([t] * self.tokens_per_image(next(it)) if t == self.image_token_id else [t])
        return out

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)

    # ------------------------------------------------------------ invariants
    def check_invariants(self, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None,
                         sample_ids: list[str], n_images_per_sample: list[int]) -> None:
        """Per sample: image pad tokens == sum of grid products / merge^2, one complete run
        per image between <|vision_start|> and <|vision_end|>. Raises ImageTokenError."""
        check_image_tokens(input_ids, image_grid_thw, sample_ids, n_images_per_sample,
                           merge_size=self.merge_size, image_token_id=self.image_token_id,
                           video_token_id=self.video_token_id,
                           vision_start_id=self.vision_start_id, vision_end_id=self.vision_end_id)

    # ------------------------------------------------------------ forward
    def _batch(self, contexts: list[Context]) -> dict[str, Any]:
        """Left-padded model inputs with Qwen mrope positions; checks invariants first.

        Identical images (a GRPO group shares its prompt image) go through the vision tower
        once; their features are reused for every occurrence (Qwen2/2.5-VL; Qwen3-VL's
        deepstack features take the plain path). With a placement (placement.py) the features
        come from it instead: cached across calls, or from the vision device / process."""
        if not contexts or any(not c.token_ids for c in contexts):
            raise ValueError("every context needs at least one token")
        ids, mask = pad_left([list(c.token_ids) for c in contexts], self.pad_id)
        images = [im for c in contexts for im in c.images]
        served = self.placement.inputs(self, images) if images and self.placement else None
        uniq, where = dedupe_images(images) if served is None else (images, [])
        share = len(uniq) < len(images) and self.family in ("qwen2_vl", "qwen2_5_vl")
        enc = self.encode_images(uniq if share else images) if images and not served else {}
        grid = enc.get("image_grid_thw") if served is None else served[0]
        if share:
            grid = grid[torch.tensor(where)]
        self.check_invariants(ids, grid, [c.id for c in contexts],
                              [len(c.images) for c in contexts])
        dev = self.device
        ids, mask = ids.to(dev), mask.to(dev)
        mm_types = (ids == self.image_token_id).int()
        positions, _ = self.core.model.get_rope_index(
            ids, mm_token_type_ids=mm_types, attention_mask=mask,
            image_grid_thw=None if grid is None else grid.to(dev))
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask,
                                 "position_ids": positions}
        if served is not None:  # (grid, features on this device) from the placement
            batch["mm_encoder_outputs"] = {"image": served[1]}
            batch["image_grid_thw"] = grid.to(dev)
        elif enc and share:
            feats = self.image_features(enc)
            feats.pooler_output = tuple(feats.pooler_output[i] for i in where)
            batch["mm_encoder_outputs"] = {"image": feats}
            batch["image_grid_thw"] = grid.to(dev)
        elif enc:
            batch["pixel_values"] = enc["pixel_values"].to(dev)
            batch["image_grid_thw"] = grid.to(dev)
        return batch

    def _forward(self, contexts: list[Context]) -> tuple[dict[str, Any], torch.Tensor, Any]:
        """(model inputs, last hidden states [B, T, H], output head): the LM head is left to
        the caller, which applies it only where it needs logits."""
        batch = self._batch(contexts)
        hidden = self.core.model(**batch, use_cache=False).last_hidden_state
        return batch, hidden, self.core.get_output_embeddings()

    def logprobs(self, contexts: list[Context], temperature: float = 1.0) -> list[torch.Tensor]:
        """Per context, logp of token t given tokens < t for t = 1..T-1 (with grad).

        The LM head runs in chunks over real (non-pad) positions only, recomputed in backward,
        so a [B, T, vocab] logits tensor never exists."""
        if self.wrapped is not None and torch.is_grad_enabled():
            return self.wrapped("_logprobs", contexts, temperature)
        return self._logprobs(contexts, temperature)

    def _logprobs(self, contexts: list[Context], temperature: float = 1.0) -> list[torch.Tensor]:
        batch, hidden, head = self._forward(contexts)
        width = batch["input_ids"].shape[1]
        out = []
        for b, c in enumerate(contexts):
            n = len(c.token_ids)
            rows = hidden[b, width - n:width - 1]  # predicts tokens 1..n-1
            out.append(chunked_logps(rows, head, batch["input_ids"][b, width - n + 1:],
                                     temperature))
        return out

    def log_dists(self, contexts: list[Context], masks: list[list[int]]) -> list[torch.Tensor]:
        """Per context, log-softmax over the whole vocabulary at the positions that predict the
        tokens whose mask is 1 ([k, vocab], with grad): for token-level KL (ViCO, train/vico.py).
        Memory is k x vocab per context: meant for response tokens, not whole episodes."""
        if self.wrapped is not None and torch.is_grad_enabled():
            return self.wrapped("_log_dists", contexts, masks)
        return self._log_dists(contexts, masks)

    def _log_dists(self, contexts: list[Context], masks: list[list[int]]) -> list[torch.Tensor]:
        batch, hidden, head = self._forward(contexts)
        width = batch["input_ids"].shape[1]
        out = []
        for b, (c, m) in enumerate(zip(contexts, masks)):
            n = len(c.token_ids)
            keep = torch.tensor(m[1:n], dtype=torch.bool, device=hidden.device)
            rows = hidden[b, width - n:width - 1][keep]  # predicts the masked tokens
            out.append(torch.log_softmax(head(rows).float(), -1))
        return out

    @torch.no_grad()
    def generate(self, contexts: list[Context], max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, stop_strings: tuple[str, ...] | list[str] = (),
                 seed: int | None = None) -> list[Generation]:
        """Sample continuations for a batch of contexts (temperature 0 = greedy). Each stops at
        eos, at the token that completes a stop string, or after max_new_tokens."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._generate(contexts, max_new_tokens, temperature, top_p,
                                  tuple(stop_strings), seed)
        finally:
            self.model.train(was_training)

    def _generate(self, contexts, max_new_tokens, temperature, top_p, stop_strings, seed):
        batch = self._batch(contexts)
        n = len(contexts)
        dev = self.device
        gen = torch.Generator(device=dev)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        mask = batch["attention_mask"]
        next_pos = batch["position_ids"].amax(dim=(0, 2)) + 1  # [B]
        out = self.model(**batch, use_cache=True, logits_to_keep=1)
        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        stops: list[str | None] = [None] * n
        tail = max((len(s.encode()) for s in stop_strings), default=0) + 2
        banned = [self.image_token_id, self.video_token_id]
        for step in range(max_new_tokens):
            tok, lp = sample_next(out.logits[:, -1], temperature, top_p, gen, banned)
            for b, (t, p) in enumerate(zip(tok.tolist(), lp.tolist())):
                if stops[b] is not None:
                    continue
                tokens[b].append(t)
                logps[b].append(p)
                if t in self.eos_ids:
                    stops[b] = "eos"
                elif stop_strings:
                    text = self.tokenizer.decode(tokens[b][-tail:], skip_special_tokens=False)
                    stops[b] = next((s for s in stop_strings if s in text), None)
            if all(s is not None for s in stops) or step == max_new_tokens - 1:
                break
            feed = torch.tensor([t if s is None else self.pad_id for t, s in
                                 zip(tok.tolist(), stops)], device=dev)
            mask = torch.cat([mask, mask.new_ones(n, 1)], dim=1)
            pos = (next_pos + step).view(1, n, 1).expand(3, n, 1)
            out = self.model(input_ids=feed[:, None], attention_mask=mask, position_ids=pos,
                             cache=out.cache, use_cache=True)
        results = []
        for b in range(n):
            ids = tokens[b]
            body = ids[:-1] if stops[b] == "eos" else ids
            results.append(Generation(ids, logps[b], self.decode(body), stops[b] or "length"))
        return results

    # ------------------------------------------------------------ saving
    def save_pretrained(self, out_dir: str | Path, merged: bool = False) -> Path:
        """LoRA policies: adapters only (adapter_model.safetensors + adapter_config.json), or
        `merged=True` full weights with the adapters folded in. Plain policies: full weights.
        The processor is saved alongside either way."""
        return save_model(self.model, self.processor, out_dir, merged,
                          gathered=self.fsdp_gathered is not None)


# ---------------------------------------------------------------- helpers
def _is_image(item: Any) -> bool:
    return isinstance(item, dict) and (item.get("type") == "image" or "image" in item
                                      or "image_url" in item)


def _image_size(item: dict[str, Any]) -> tuple[int, int]:
    img = item.get("image")
    if isinstance(img, Image.Image):
        return img.size
    if item.get("size") is not None:
        w, h = item["size"]
        return int(w), int(h)
    raise ValueError("an image item needs a PIL image under 'image' or a (w, h) 'size'")

"""Decoupled vision / language placement (InternVL3.5's DvD) and the vision-embedding cache.

    policy = Policy.from_config(cfg.policy)  # policy.placement: {vision, vision_device, cache_size}
    policy.prefetch(next_contexts)           # process: their images encode while the LM works
    policy.logprobs(contexts)                # features come from the cache / the vision process

The vision tower (with its merger, the projector into the LM) runs

- `same`: where the LM is (the plain model; with `cache_size` its features are cached),
- `device`: on `vision_device` in this process; features move to the LM's device,
- `process`: in its own process (torch.multiprocessing, spawn) on `vision_device`, which keeps
  its own feature cache and answers requests keyed by image content hash; `prefetch` sends the
  next micro-batch's images ahead, so they are encoded while this process runs the LM.

Images arrive at their seen size, so the content key (images.image_key: size, mode, pixels) also
names the pixel budget level. The cache is used only while the vision tower is frozen (no
parameter of it requires grad: LoRA on the LM, or a frozen tower): its features carry no gradient
and stay valid. A trainable tower bypasses the cache and empties it (every call encodes with
grad, as without a placement); `process` refuses a trainable tower, since its copy of the weights
would go stale after an optimiser step. A stamp of the frozen tower's weights (tensor identity and
in-place version, adapter switches) empties the cache whenever they change (a checkpoint load, an
adapter disabled for the reference), and restarts the vision process with the new weights.
"""
from __future__ import annotations

import copy
import os
import queue
import time
import traceback
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlmagent.config import PlacementConfig
from vlmagent.errors import UsageError
from vlmagent.images import image_key

VISION = ("same", "device", "process")
REPLY_TIMEOUT_S = 600.0  # a vision process that answers nothing for this long is declared stuck

Features = tuple[torch.Tensor, ...]  # one image: merged tokens [n, H], then any deepstack [n, H]


# ---------------------------------------------------------------- pure helpers
def tower_features(visual: torch.nn.Module, pixel_values: torch.Tensor,
                   grid: torch.Tensor) -> list[Features]:
    """The vision tower on patches of several images: per image (merged tokens, *deepstack
    features). What the model's get_image_features computes, split per image; the same
    function runs in this process and in the vision process, so both give the same numbers."""
    dev = next(visual.parameters()).device
    out = visual(pixel_values.to(dev).type(visual.dtype), grid_thw=grid.to(dev), return_dict=True)
    sizes = (grid.prod(-1) // visual.spatial_merge_size ** 2).tolist()
    parts = [torch.split(out.pooler_output, sizes)]
    parts += [torch.split(f, sizes) for f in getattr(out, "deepstack_features", None) or []]
    return [tuple(p[i] for p in parts) for i in range(len(sizes))]


def patchify(image_processor: Any, images: list[Image.Image], patch_size: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values, image_grid_thw) of images already at their seen size: Policy.encode_images
    without the policy, for the vision process (bounds that include every image make the
    processor's resize a no-op)."""
    areas = [w * h for w, h in (im.size for im in images)]
    out = image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt",
                          size={"shortest_edge": min(areas), "longest_edge": max(areas)})
    want = torch.tensor([[1, h // patch_size, w // patch_size] for w, h in
                         (im.size for im in images)])
    if not torch.equal(out["image_grid_thw"], want):
        raise RuntimeError(f"image processor resized the images: grid "
                           f"{out['image_grid_thw'].tolist()}, expected {want.tolist()}")
    return out["pixel_values"], want


def model_output(feats: list[Features], deepstack_cls: Any = None) -> Any:
    """The `mm_encoder_outputs["image"]` the HF model reads: per occurrence of an image, its
    merged tokens (`pooler_output`) and, for Qwen3-VL, the deepstack features per layer."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    pooled = tuple(f[0] for f in feats)
    if len(feats[0]) == 1:
        return BaseModelOutputWithPooling(pooler_output=pooled)
    out = (deepstack_cls or BaseModelOutputWithPooling)(pooler_output=pooled)
    out.deepstack_features = [tuple(f[k] for f in feats) for k in range(1, len(feats[0]))]
    return out


def trainable(visual: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in visual.parameters())


def weights_stamp(visual: torch.nn.Module) -> tuple:
    """Changes whenever the tower's numbers may: a parameter replaced or modified in place (its
    version counter: optimiser steps, load_state_dict, merges) or a peft adapter switched off
    or on (the reference's disable_adapter)."""
    params = tuple((id(p), p._version) for p in visual.parameters())
    adapters = tuple((bool(m.disable_adapters), tuple(m.active_adapters), bool(m.merged))
                     for m in visual.modules() if hasattr(m, "active_adapters")
                     and hasattr(m, "disable_adapters") and hasattr(m, "merged"))
    return params, adapters


class FeatureCache:
    """Per image key: (grid row [3], features), least recently used out beyond `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[torch.Tensor, Features]] = OrderedDict()

    def get(self, key: str) -> tuple[torch.Tensor, Features] | None:
        item = self.items.get(key)
        if item is not None:
            self.items.move_to_end(key)
        return item

    def put(self, key: str, item: tuple[torch.Tensor, Features]) -> None:
        if self.size <= 0:
            return
        self.items[key] = item
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def clear(self) -> None:
        self.items.clear()

    def __len__(self) -> int:
        return len(self.items)


# ---------------------------------------------------------------- placement
class Placement:
    """Serves image features to Policy._batch. `forwards` / `images` count vision tower calls
    and the images they encoded (the vision process's included)."""

    def __init__(self, cfg: PlacementConfig, policy: Any) -> None:
        if cfg.vision not in VISION:
            raise UsageError(f"policy.placement.vision {cfg.vision!r} is not one of {VISION}")
        if cfg.cache_size < 0:
            raise UsageError(f"policy.placement.cache_size must be >= 0, got {cfg.cache_size}")
        self.cfg = cfg
        self.cache = FeatureCache(cfg.cache_size)
        self.counts = [0, 0]  # vision forwards, images encoded: here and in closed processes
        self.stamp: tuple | None = None
        self.server: VisionServer | None = None
        visual = policy.core.model.visual
        self.vision_device = torch.device(cfg.vision_device) if cfg.vision_device else policy.device
        if cfg.vision == "device":
            visual.to(self.vision_device)
        if cfg.vision == "process":
            self._check_frozen(visual)
        # Qwen3-VL's output class carries the deepstack features the LM adds at early layers
        self.deepstack_cls = None
        if policy.family.startswith("qwen3"):
            from transformers.models.qwen3_vl.modeling_qwen3_vl import (
                BaseModelOutputWithDeepstackFeatures,
            )
            self.deepstack_cls = BaseModelOutputWithDeepstackFeatures

    @property
    def forwards(self) -> int:
        return self.counts[0] + (self.server.forwards if self.server is not None else 0)

    @property
    def images(self) -> int:
        return self.counts[1] + (self.server.images if self.server is not None else 0)

    def _check_frozen(self, visual: torch.nn.Module) -> None:
        if trainable(visual):
            raise UsageError(
                "policy.placement.vision=process needs a frozen vision tower (its process holds a "
                "copy of the weights that an optimiser step would leave stale): train LoRA on the "
                "language model only (lora.train_vision false), or use vision same / device")

    def _fresh(self, policy: Any) -> None:
        """Empty the caches (and restart the vision process) when the tower's weights moved."""
        stamp = weights_stamp(policy.core.model.visual)
        if stamp != self.stamp:
            self.invalidate()
            self.stamp = stamp

    def invalidate(self) -> None:
        """Forget every cached feature (and the vision process's copy of the weights). Called by
        itself when the weights stamp changes; callers that change the tower's weights in a way
        the stamp cannot see may call it too."""
        self.cache.clear()
        if self.server is not None:
            self.counts = [self.forwards, self.images]
            self.server.close()
            self.server = None

    def close(self) -> None:
        self.invalidate()

    # ------------------------------------------------------------ serving
    def inputs(self, policy: Any, images: list[Image.Image]) -> tuple[torch.Tensor, Any]:
        """(image_grid_thw [n, 3] on CPU, mm_encoder_outputs["image"] on the LM's device) for
        `images` in order; each unique image goes through the vision tower at most once here,
        and not at all when it is cached."""
        keys = [image_key(im) for im in images]
        uniq = dict(zip(keys, images))
        visual = policy.core.model.visual
        dev = policy.device
        if trainable(visual):
            if self.cfg.vision == "process":
                self._check_frozen(visual)
            self.cache.clear()  # the weights will move: nothing cached may outlive this step
            self.stamp = None
            got = self._encode_local(policy, list(uniq), list(uniq.values()))
            got = {k: (g, tuple(t.to(dev) for t in f)) for k, (g, f) in got.items()}
        else:
            self._fresh(policy)
            got = {k: item for k in uniq if (item := self.cache.get(k)) is not None}
            todo = [k for k in uniq if k not in got]
            if todo and self.cfg.vision == "process":
                got.update(self._server(policy).fetch(policy, todo, [uniq[k] for k in todo]))
            elif todo:
                with torch.no_grad():
                    got.update(self._encode_local(policy, todo, [uniq[k] for k in todo]))
            for k in todo:  # kept on the LM's device: a hit costs no copy
                got[k] = (got[k][0], tuple(t.to(dev) for t in got[k][1]))
                self.cache.put(k, got[k])
        grid = torch.stack([got[k][0] for k in keys])
        feats = [got[k][1] for k in keys]
        return grid, model_output(feats, self.deepstack_cls)

    def prefetch(self, policy: Any, images: list[Image.Image]) -> None:
        """Send images the next call will need to the vision process now; they are encoded
        while this process works. In-process placements encode on demand (no-op here)."""
        if self.cfg.vision != "process" or not images or trainable(policy.core.model.visual):
            return
        self._fresh(policy)
        uniq = {}
        for im in images:
            key = image_key(im)
            if self.cache.get(key) is None:
                uniq[key] = im
        if uniq:
            self._server(policy).send(policy, list(uniq), list(uniq.values()))

    def _encode_local(self, policy: Any, keys: list[str], images: list[Image.Image]
                      ) -> dict[str, tuple[torch.Tensor, Features]]:
        enc = policy.encode_images(images)
        feats = tower_features(policy.core.model.visual, enc["pixel_values"],
                               enc["image_grid_thw"])
        self.counts[0] += 1
        self.counts[1] += len(images)
        grid = enc["image_grid_thw"].cpu()
        return {k: (grid[i], f) for i, (k, f) in enumerate(zip(keys, feats))}

    def _server(self, policy: Any) -> VisionServer:
        if self.server is not None and not self.server.proc.is_alive():
            self.invalidate()  # (a dead process: its counts stay, a new one starts)
        if self.server is None:
            self.server = VisionServer(policy.core.model.visual, policy.processor,
                                       policy.patch_size, self.vision_device,
                                       self.cfg.cache_size)
        return self.server


# ---------------------------------------------------------------- the vision process
class VisionServer:
    """A spawned process holding a frozen copy of the vision tower on `device`: requests are
    (id, keys, RGB arrays), replies (id, {key: (grid row, features)}, its counts). It keeps its own
    LRU cache of `cache_size` features, so a key it has seen costs no vision forward."""

    def __init__(self, visual: torch.nn.Module, processor: Any, patch_size: int,
                 device: torch.device, cache_size: int) -> None:
        ctx = torch.multiprocessing.get_context("spawn")
        tower = copy.deepcopy(visual).to("cpu").eval()  # shared memory, not pickled bytes
        tower._forward_hooks.clear()  # a caller's counting hooks stay in this process
        for p in tower.parameters():
            p.requires_grad_(False)
        self.requests, self.replies = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_serve, daemon=True, name="vlmagent-vision",
                                args=(tower, processor.image_processor, patch_size, str(device),
                                      cache_size, torch.get_num_threads(), self.requests,
                                      self.replies))
        self.proc.start()
        self.next_id = 0
        self.pending: dict[str, int] = {}  # key -> request id in flight
        self.ready: dict[str, tuple[torch.Tensor, Features]] = {}
        self.forwards = self.images = 0  # as the process reports them

    def send(self, policy: Any, keys: list[str], images: list[Image.Image]) -> None:
        keys_images = [(k, im) for k, im in zip(keys, images)
                       if k not in self.pending and k not in self.ready]
        if not keys_images:
            return
        for _, im in keys_images:
            policy.tokens_per_image(im.size)  # raises here on a size the processor would resize
        # RGB arrays in shared memory; the process cuts them into patches itself, so all the
        # vision work, pixels to features, happens off this process
        keys = [k for k, _ in keys_images]
        arrays = [torch.from_numpy(np.array(im.convert("RGB"))) for _, im in keys_images]
        self.requests.put((self.next_id, keys, arrays))
        for k in keys:
            self.pending[k] = self.next_id
        self.next_id += 1

    def fetch(self, policy: Any, keys: list[str], images: list[Image.Image]
              ) -> dict[str, tuple[torch.Tensor, Features]]:
        self.send(policy, keys, images)
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while any(k not in self.ready for k in keys):
            try:
                msg = self.replies.get(timeout=1.0)
            except queue.Empty:
                if not self.proc.is_alive():
                    raise RuntimeError(f"the vision process exited (code {self.proc.exitcode})"
                                       ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the vision process sent nothing for "
                                       f"{REPLY_TIMEOUT_S:.0f} s") from None
                continue
            if msg[0] == "error":
                raise RuntimeError(f"the vision process failed:\n{msg[1]}")
            _, got, self.forwards, self.images = msg
            for k, item in got.items():
                self.pending.pop(k, None)
                self.ready[k] = item
        return {k: self.ready.pop(k) for k in keys}

    def close(self) -> None:
        if self.proc.is_alive():
            self.requests.put(None)
            self.proc.join(timeout=10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(timeout=5)


def _serve(tower: torch.nn.Module, image_processor: Any, patch_size: int, device: str,
           cache_size: int, threads: int, requests: Any, replies: Any) -> None:
    """The vision process's loop: encode each request's unseen images in one forward."""
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    tower.to(device)
    cache = FeatureCache(cache_size)
    forwards = images = 0
    while (msg := requests.get()) is not None:
        try:
            rid, keys, arrays = msg
            todo = [i for i, k in enumerate(keys) if cache.get(k) is None]
            got = {k: item for k in keys if (item := cache.get(k)) is not None}
            if todo:
                pixels, grid = patchify(image_processor,
                                        [Image.fromarray(arrays[i].numpy()) for i in todo],
                                        patch_size)
                with torch.no_grad():
                    feats = tower_features(tower, pixels, grid)
                forwards += 1
                images += len(todo)
                for j, (i, f) in enumerate(zip(todo, feats)):
                    item = (grid[j], tuple(t.to("cpu").clone() for t in f))
                    got[keys[i]] = item
                    cache.put(keys[i], item)
            replies.put((rid, got, forwards, images))
        except Exception:  # noqa: BLE001 - the caller raises it with the traceback
            replies.put(("error", traceback.format_exc()))


def make_placement(cfg: PlacementConfig, policy: Any) -> Placement | None:
    """None for the defaults (the plain model, exactly as without a placement)."""
    if cfg.vision == "same" and cfg.cache_size == 0 and not cfg.vision_device:
        return None
    return Placement(cfg, policy)

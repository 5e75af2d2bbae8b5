"""The learned router (InternVL3.5's ViR, trained ViCO-style): a linear head on the policy's own
vision features of a cheap pass, deciding per image whether the low budget loses the answer.

The features are the mean of the vision tower's merged output tokens (what the language model
reads) for the image at the LOW level: a quarter of the full pass's tokens, so routing costs a
fraction of what it saves. The head is trained by the `router` stage (train/vico.py) on labels
from the policy's own losses; it is saved on its own (`router.safetensors` + `router.json`),
so the router can be swapped without touching the policy's weights.

Classes: 0 = keep the full budget, 1 = the low level suffices.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vlmagent.images import Size, image_key, resize_seen

WEIGHTS, META = "router.safetensors", "router.json"


def pooled_features(policy: Any, images: list[Image.Image], pool: str = "mean") -> torch.Tensor:
    """[n, dim]: the merged vision tokens of each image (already at its seen size), averaged
    (`mean`) or their maximum per feature (`max`: a mean over 16 tokens dilutes what one token
    shows; measured on far red / green lamps, a linear head on the max reads 0.88-0.90 held-out
    where the mean memorised the streets, 0.62-0.69)."""
    feats = policy.image_features(policy.encode_images(images)).pooler_output
    return torch.stack([f.max(0).values if pool == "max" else f.mean(0) for f in feats])


def new_head(policy: Any, seed: int = 1234) -> torch.nn.Linear:
    dim = policy.core.get_input_embeddings().embedding_dim  # merged vision tokens are LM-sized
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(dim, 2)
    param = next(policy.core.model.visual.parameters())
    return head.to(param.device, param.dtype)


class LearnedRouter:
    CACHE = 4096  # decisions kept by image content (a GRPO group shows one image G times)

    def __init__(self, head: torch.nn.Linear, policy: Any, low: int = 1, p_full: float = 0.5):
        self.head, self.policy, self.low, self.p_full = head, policy, low, p_full
        self.decided: dict[str, int] = {}

    def prefetch(self, images: list[Image.Image], seen_at: Callable[[Image.Image, int], Size],
                 batch: int = 64) -> None:
        """Decide for many images in batched vision passes (one per image, however often it is
        shown); `choose` then only looks the decision up."""
        todo = {image_key(im): im for im in images}
        todo = {k: im for k, im in todo.items() if k not in self.decided}
        items = list(todo.items())
        for i in range(0, len(items), batch):
            part = items[i:i + batch]
            lows = [resize_seen(im, seen_at(im, self.low)) for _, im in part]
            for (k, _), p in zip(part, self.prob_full(lows).tolist()):
                self._keep(k, 0 if p >= self.p_full else self.low)

    def _keep(self, key: str, level: int) -> None:
        if len(self.decided) >= self.CACHE:
            self.decided.pop(next(iter(self.decided)))
        self.decided[key] = level

    @torch.no_grad()
    def prob_full(self, images_low: list[Image.Image]) -> torch.Tensor:
        """P(needs the full budget) per image given at its low-level seen size."""
        logits = self.head(pooled_features(self.policy, images_low))
        return logits.float().softmax(-1)[:, 0]

    def choose(self, image: Image.Image, seen_at: Callable[[Image.Image, int], Size]) -> int:
        key = image_key(image)
        if key not in self.decided:
            self.prefetch([image], seen_at)
        return self.decided[key]

    def save_pretrained(self, path: str | Path, **meta: Any) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().float().cpu().contiguous()
                   for k, v in self.head.state_dict().items()}, str(out / WEIGHTS))
        (out / META).write_text(json.dumps({"dim": self.head.in_features, "low": self.low,
                                            "p_full": self.p_full, **meta}, indent=1))
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path | None, policy: Any, low: int = 1) -> LearnedRouter:
        if not path or not (Path(path) / WEIGHTS).exists():
            raise ValueError(f"router.kind learned needs router.path, a folder with {WEIGHTS} "
                             f"(written by a `router` stage); got {path!r}")
        meta = json.loads((Path(path) / META).read_text())
        head = new_head(policy)
        if head.in_features != meta["dim"]:
            raise ValueError(f"router at {path} reads {meta['dim']}-dim features, this policy's "
                             f"vision tower gives {head.in_features}")
        state = load_file(str(Path(path) / WEIGHTS))
        head.load_state_dict({k: v.to(head.weight.dtype) for k, v in state.items()})
        return cls(head, policy, low, float(meta.get("p_full", 0.5)))

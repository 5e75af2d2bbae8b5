"""vlmagent.placement on tiny Qwen-VL models: the same log-probs whatever the vision tower's
placement (same / device / process), one vision forward per unique image across calls while the
tower is frozen, no cache while it trains, and the vision process's refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlmagent import tiny
from vlmagent.config import ConfigError, PlacementConfig, PolicyConfig, from_dict
from vlmagent.errors import UsageError
from vlmagent.placement import Placement, make_placement
from vlmagent.policy import Context, Policy


def image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def context(pol: Policy, images: list[Image.Image], text: str, cid: str) -> Context:
    content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": text}]
    return Context(pol.chat_tokens([{"role": "user", "content": content}],
                                   add_generation_prompt=True), images, cid)


def contexts(pol: Policy) -> list[Context]:
    """Three sequences, four image slots, three unique images (one shown twice)."""
    f = pol.patch_factor
    a, b, c = image(2 * f, 3 * f, 1), image(4 * f, 2 * f, 2), image(3 * f, 3 * f, 3)
    return [context(pol, [a], "How many circles?", "a"),
            context(pol, [b, a], "Compare the two and count.", "ba"),
            context(pol, [c], "What colour is it?", "c")]


def count_tower(pol: Policy) -> dict[str, int]:
    """Vision tower calls and the images they took (a forward hook: counts every path)."""
    n = {"forwards": 0, "images": 0}

    def hook(_mod, args, kwargs, _out):
        n["forwards"] += 1
        n["images"] += int(kwargs["grid_thw"].shape[0])

    pol.core.model.visual.register_forward_hook(hook, with_kwargs=True)
    return n


def frozen(path) -> Policy:
    pol = Policy.from_pretrained(path)
    for p in pol.core.model.visual.parameters():
        p.requires_grad_(False)
    return pol


def max_diff(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    assert [x.shape for x in xs] == [y.shape for y in ys]
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys))


# ---------------------------------------------------------------- same numbers everywhere
def test_logprobs_equal_same_device_process(tiny) -> None:
    """Plain model vs each placement (first call, then the cached one), and the vision process
    serving a prefetched batch: the parent's tower never runs, the process encodes each of
    the three unique images once, the call after the prefetch sends no request of its own."""
    pol = frozen(tiny)
    n = count_tower(pol)
    ctx = contexts(pol)
    with torch.no_grad():
        plain = pol.logprobs(ctx)
        results = {}
        for vision in ("same", "device"):
            pol.placement = Placement(PlacementConfig(vision, "cpu", cache_size=8), pol)
            results[vision] = [pol.logprobs(ctx), pol.logprobs(ctx)]  # miss, then cached
        assert n["forwards"] == 3  # plain, same, device: one each
        pol.placement = Placement(PlacementConfig("process", cache_size=8), pol)
        try:
            pol.prefetch(ctx)  # sent ahead: encoded in the other process
            server = pol.placement.server
            assert server is not None and len(server.pending) == 3
            results["process"] = [pol.logprobs(ctx), pol.logprobs(ctx)]
            assert server.next_id == 1  # the calls sent no request of their own
            assert (pol.placement.forwards, pol.placement.images) == (1, 3)
        finally:
            pol.placement.close()
        assert n["forwards"] == 3  # the parent's tower did not run for the process placement
    for vision, (first, cached) in results.items():
        assert max_diff(plain, first) < 1e-5, vision
        assert max_diff(plain, cached) < 1e-5, vision
    pol.placement = None
    gens = pol.generate(ctx, max_new_tokens=6, temperature=0.0)
    pol.placement = Placement(PlacementConfig("same", cache_size=8), pol)
    assert [g.token_ids for g in pol.generate(ctx, max_new_tokens=6, temperature=0.0)] == \
        [g.token_ids for g in gens]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_cached_features_match_the_plain_model_in_every_family(tiny_factory, family) -> None:
    """Qwen3-VL's deepstack features are cached and handed to the LM too."""
    assert family in tiny.TINY_FAMILIES
    pol = frozen(tiny_factory(family=family))
    ctx = contexts(pol)
    with torch.no_grad():
        plain = pol.logprobs(ctx)
        pol.placement = Placement(PlacementConfig("same", cache_size=8), pol)
        first, cached = pol.logprobs(ctx), pol.logprobs(ctx)
    assert max_diff(plain, first) < 1e-5 and max_diff(plain, cached) < 1e-5
    assert pol.placement.images == 3  # three unique images, once


# ---------------------------------------------------------------- one forward per unique image
def test_grpo_sequence_encodes_each_unique_image_once(tiny) -> None:
    """G completions generated one call each on one image, then logprobs of all G (as the
    reference and the training forward take them): G + 1 vision forwards without the cache,
    1 with it; and with two prompts, exactly two images through the tower."""
    G = 4
    for cache_size, want_forwards in ((0, G + 1), (16, 1)):
        pol = frozen(tiny)
        pol.placement = make_placement(PlacementConfig(cache_size=cache_size), pol)
        n = count_tower(pol)
        prompt = contexts(pol)[0]
        gens = [pol.generate([prompt], max_new_tokens=4, seed=s)[0] for s in range(G)]
        with torch.no_grad():
            pol.logprobs([Context(prompt.token_ids + g.token_ids, prompt.images) for g in gens])
        assert n["forwards"] == want_forwards, (cache_size, n)
    ctx = contexts(pol)  # a second step: two new prompts (a, c) besides the cached one
    n["forwards"] = n["images"] = 0
    pol.generate([ctx[0], ctx[2]] * G, max_new_tokens=2, seed=0)
    pol.logprobs([ctx[0], ctx[2]] * G)
    assert n == {"forwards": 1, "images": 1}  # image a was cached, only c went through


def test_trainable_tower_bypasses_the_cache_and_gets_gradients(tiny) -> None:
    pol = Policy.from_pretrained(tiny)  # full weights: the vision tower trains
    pol.placement = Placement(PlacementConfig("same", cache_size=8), pol)
    n = count_tower(pol)
    ctx = contexts(pol)
    pol.logprobs(ctx)
    loss = sum(lp.sum() for lp in pol.logprobs(ctx))
    assert n["forwards"] == 2 and len(pol.placement.cache) == 0
    loss.backward()
    grads = [p.grad for p in pol.core.model.visual.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    for p in pol.core.model.visual.parameters():  # frozen from here: the cache takes over
        p.requires_grad_(False)
    pol.logprobs(ctx)
    pol.logprobs(ctx)
    assert n["forwards"] == 3 and len(pol.placement.cache) == 3


def test_changed_weights_empty_the_cache(tiny) -> None:
    """An in-place change to a frozen tower (an optimiser step, a checkpoint load) is seen by
    the weights stamp: the next call encodes again, with the new numbers."""
    pol = frozen(tiny)
    pol.placement = Placement(PlacementConfig("same", cache_size=8), pol)
    n = count_tower(pol)
    ctx = contexts(pol)[:1]
    with torch.no_grad():
        before = pol.logprobs(ctx)
        pol.logprobs(ctx)
        assert n["forwards"] == 1
        next(pol.core.model.merger.parameters() if hasattr(pol.core.model, "merger")
             else pol.core.model.visual.merger.parameters()).add_(0.05)
        after = pol.logprobs(ctx)
        assert n["forwards"] == 2
        pol.placement.close()
        pol.placement = None
        plain = pol.logprobs(ctx)
    assert max_diff(after, plain) < 1e-5 and max_diff(after, before) > 1e-4


def test_adapter_switch_on_a_frozen_tower_is_not_served_stale(tiny) -> None:
    """LoRA layers in a frozen vision tower (a loaded train_vision adapter): the reference's
    disable_adapter changes the features without touching a weight; the stamp sees it."""
    from vlmagent.config import LoraSettings
    from vlmagent.modelio import add_lora

    pol = Policy.from_pretrained(tiny)
    pol = Policy(add_lora(pol.model, LoraSettings(train_vision=True)).eval(), pol.processor)
    with torch.no_grad():
        for name, p in pol.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
            p.requires_grad_(False)
    ctx = contexts(pol)[:1]
    with torch.no_grad():
        on_plain = pol.logprobs(ctx)
        with pol.model.disable_adapter():
            off_plain = pol.logprobs(ctx)
        pol.placement = Placement(PlacementConfig("same", cache_size=8), pol)
        on = pol.logprobs(ctx)
        with pol.model.disable_adapter():
            off = pol.logprobs(ctx)
    assert max_diff(on_plain, off_plain) > 1e-4  # the adapter matters
    assert max_diff(on, on_plain) < 1e-5 and max_diff(off, off_plain) < 1e-5


# ---------------------------------------------------------------- the vision process
def test_process_placement_refuses_a_trainable_tower(tiny) -> None:
    pol = Policy.from_pretrained(tiny)
    with pytest.raises(UsageError, match="frozen vision tower"):
        Placement(PlacementConfig("process"), pol)
    for p in pol.core.model.visual.parameters():
        p.requires_grad_(False)
    pol.placement = Placement(PlacementConfig("process"), pol)
    next(pol.core.model.visual.parameters()).requires_grad_(True)  # unfrozen later: refused
    with pytest.raises(UsageError, match="frozen vision tower"):
        pol.logprobs(contexts(pol)[:1])
    assert pol.placement.server is None  # no process was started


def test_placement_config_is_strict_and_defaults_to_the_plain_model(tiny) -> None:
    with pytest.raises(ConfigError, match="visoin"):
        from_dict(PolicyConfig, {"placement": {"visoin": "process"}}, "f", "policy")
    pol = Policy.from_config(PolicyConfig(path=str(tiny), device="cpu"))
    assert pol.placement is None
    with pytest.raises(UsageError, match="not one of"):
        Policy.from_config(PolicyConfig(path=str(tiny), device="cpu",
                                        placement=PlacementConfig(vision="gpu")))
    pol = Policy.from_config(PolicyConfig(path=str(tiny), device="cpu",
                                          placement=PlacementConfig(cache_size=4)))
    assert pol.placement.cfg.cache_size == 4


# ---------------------------------------------------------------- real devices
@pytest.mark.gpu
@pytest.mark.parametrize("lm,vision", [("cuda:0", "cpu"), ("cuda:0", "cuda:1")])
def test_device_placement_across_real_devices(tiny, lm, vision) -> None:
    """The LM on a GPU, the vision tower on `vision`: the same log-probs and gradients (LoRA
    on the LM) as everything on the GPU."""
    need = 1 + (vision == "cuda:1")
    if not torch.cuda.is_available() or torch.cuda.device_count() < need:
        pytest.skip(f"needs {need} CUDA device(s)")
    pol = Policy.from_pretrained(tiny, device=lm)
    for p in pol.core.model.visual.parameters():
        p.requires_grad_(False)
    ctx = contexts(pol)
    with torch.no_grad():
        plain = [x.cpu() for x in pol.logprobs(ctx)]
    pol.placement = Placement(PlacementConfig("device", vision, cache_size=8), pol)
    assert next(pol.core.model.visual.parameters()).device == torch.device(vision)
    assert pol.device == torch.device(lm)
    with torch.no_grad():
        placed = [x.cpu() for x in pol.logprobs(ctx)]
        gens = pol.generate(ctx, max_new_tokens=4, temperature=0.0)
    assert max_diff(plain, placed) < 1e-4
    assert all(len(g.token_ids) > 0 for g in gens)

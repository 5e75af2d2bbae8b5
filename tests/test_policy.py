"""vlmagent.policy on real tiny Qwen-VL models: exact logps, image/token invariants, stopping,
LoRA save/reload."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from vlmagent import tiny
from vlmagent.config import LoraSettings, PolicyConfig
from vlmagent.images import Budget
from vlmagent.policy import FAMILIES, Context, ImageTokenError, Policy


@pytest.fixture(scope="module")
def paths(tiny_factory) -> dict[str, Path]:
    """The session's tiny models, one per buildable family (read-only)."""
    return {f: tiny_factory(family=f) for f in tiny.TINY_FAMILIES}


@pytest.fixture(scope="module")
def policy(paths) -> Policy:
    return Policy.from_pretrained(paths["qwen2_5_vl"])


def image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def context(pol: Policy, sizes: list[tuple[int, int]], text: str, cid: str) -> Context:
    f = pol.patch_factor
    images = [image(w * f, h * f, seed=i) for i, (w, h) in enumerate(sizes)]
    content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": text}]
    ids = pol.chat_tokens([{"role": "user", "content": content}], add_generation_prompt=True)
    return Context(ids, images, cid)


def three_contexts(pol: Policy) -> list[Context]:
    return [context(pol, [(2, 2)], "How many red circles?", "one"),
            context(pol, [(3, 2), (1, 4)], "Zoom on the left corner and count the shapes.", "two"),
            context(pol, [], "No image here, just answer with a number.", "none")]


def extend(c: Context, tokens: list[int]) -> Context:
    return Context(c.token_ids + tokens, c.images, c.id)


# ---------------------------------------------------------------- the key contract
@pytest.mark.parametrize("family", tiny.TINY_FAMILIES)
def test_generate_logps_equal_recomputed_logprobs(paths, family) -> None:
    pol = Policy.from_pretrained(paths[family])
    contexts = three_contexts(pol)
    assert len({len(c.token_ids) for c in contexts}) == 3
    gens = pol.generate(contexts, max_new_tokens=12, temperature=1.0, seed=7)
    assert all(len(g.token_ids) == len(g.logps) > 0 for g in gens)
    recomputed = pol.logprobs([extend(c, g.token_ids) for c, g in zip(contexts, gens)])
    for c, g, lp in zip(contexts, gens, recomputed):
        assert lp.shape == (len(c.token_ids) + len(g.token_ids) - 1,)
        n = len(g.token_ids)
        assert (lp[-n:] - torch.tensor(g.logps)).abs().max().item() < 1e-4
    # one at a time (no padding) agrees too
    alone = pol.logprobs([extend(contexts[1], gens[1].token_ids)])[0]
    assert (alone - recomputed[1]).abs().max().item() < 1e-4


def test_logps_use_temperature_and_greedy_uses_raw_logits(policy) -> None:
    contexts = three_contexts(policy)
    for temp in (0.0, 0.7):
        gens = policy.generate(contexts, max_new_tokens=6, temperature=temp, seed=1)
        lps = policy.logprobs([extend(c, g.token_ids) for c, g in zip(contexts, gens)],
                              temperature=temp or 1.0)
        for g, lp in zip(gens, lps):
            n = len(g.token_ids)
            assert (lp[-n:] - torch.tensor(g.logps)).abs().max().item() < 1e-4


def test_logprobs_carry_grad(paths) -> None:
    pol = Policy.from_pretrained(paths["qwen2_5_vl"], lora=LoraSettings(rank=4, dropout=0.0))
    lps = pol.logprobs(three_contexts(pol)[:2])
    assert all(lp.requires_grad for lp in lps)
    sum(lp.sum() for lp in lps).backward()
    trained = {n for n, p in pol.model.named_parameters() if p.grad is not None}
    assert trained and all("lora_" in n for n in trained)


# ---------------------------------------------------------------- sampling and stopping
def test_greedy_is_deterministic_and_batch_invariant(policy) -> None:
    contexts = three_contexts(policy)
    a = policy.generate(contexts, max_new_tokens=10, temperature=0)
    b = policy.generate(contexts, max_new_tokens=10, temperature=0)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    for c, g in zip(contexts, a):  # left padding does not change what each sequence sees
        assert policy.generate([c], max_new_tokens=10, temperature=0)[0].token_ids == g.token_ids
        assert g.stop == "length" and len(g.token_ids) == 10


def test_seeded_sampling(policy) -> None:
    contexts = three_contexts(policy)
    a = policy.generate(contexts, max_new_tokens=8, seed=3)
    b = policy.generate(contexts, max_new_tokens=8, seed=3)
    c = policy.generate(contexts, max_new_tokens=8, seed=4)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    greedy = policy.generate(contexts, max_new_tokens=8, temperature=0)
    tiny_p = policy.generate(contexts, max_new_tokens=8, top_p=1e-6, seed=5)
    assert [g.token_ids for g in tiny_p] == [g.token_ids for g in greedy]


def test_stop_strings_cut_each_sequence(policy) -> None:
    contexts = three_contexts(policy)
    full = policy.generate(contexts, max_new_tokens=12, temperature=0)
    # a stop string that the second sequence completes at its 5th token
    toks = full[1].token_ids
    stop = policy.decode(toks[:5])[-3:]
    assert stop and stop not in policy.decode(toks[:4])
    cut = policy.generate(contexts, max_new_tokens=12, temperature=0, stop_strings=[stop])
    assert cut[1].stop == stop and cut[1].token_ids == toks[:5]
    assert cut[1].text == policy.decode(toks[:5]) and cut[1].text.endswith(stop)
    assert len(cut[1].logps) == 5
    for g, f in zip(cut, full):  # the others stop at their own first match, or run to length
        assert f.token_ids[:len(g.token_ids)] == g.token_ids
        assert g.stop == "length" or (g.stop == stop and stop in g.text)


def test_eos_stops_and_is_trimmed_from_text(policy) -> None:
    contexts = three_contexts(policy)
    full = policy.generate(contexts, max_new_tokens=8, temperature=0)
    fake = Policy(policy.model, policy.processor)
    fake.eos_ids = {full[0].token_ids[3]}  # pretend the 4th greedy token is eos
    gens = fake.generate(contexts[:1], max_new_tokens=8, temperature=0)
    g = gens[0]
    assert g.stop == "eos" and g.token_ids == full[0].token_ids[:4] and len(g.logps) == 4
    assert g.text == policy.decode(full[0].token_ids[:3])


def test_generate_never_emits_image_pads(policy) -> None:
    gens = policy.generate(three_contexts(policy), max_new_tokens=30, seed=0)
    assert all(policy.image_token_id not in g.token_ids for g in gens)


# ---------------------------------------------------------------- images and tokens
def test_seen_size_follows_qwen_smart_resize(paths) -> None:
    for family, factor in [("qwen2_5_vl", 28), ("qwen3_vl", 32)]:
        pol = Policy.from_pretrained(paths[family])
        assert pol.patch_factor == factor
        for w, h in [(640, 480), (1000, 50), (20, 30), (3000, 2000), (57, 57)]:
            lo, hi = 4 * factor ** 2, 256 * factor ** 2
            sh, sw = smart_resize(h, w, factor, lo, hi)
            assert pol.seen_size(w, h, lo, hi) == (sw, sh)
            assert pol.tokens_per_image((sw, sh)) == (sw // factor) * (sh // factor)
    with pytest.raises(ValueError, match="multiple of 32"):
        pol.tokens_per_image((56, 64))
    with pytest.raises(ValueError, match="multiple of 32"):
        pol.encode_images([image(56, 64)])


def test_budget_comes_from_the_processor(paths) -> None:
    """Policy.budget is the processor's (factor = patch_size x merge_size, bounds = its size),
    and seen_size without bounds uses those bounds (the tiny processors: 28x28..448x448)."""
    for family, factor in [("qwen2_vl", 28), ("qwen2_5_vl", 28), ("qwen3_vl", 32)]:
        pol = Policy.from_pretrained(paths[family])
        assert pol.budget == Budget.from_processor(pol.processor) == \
            Budget(factor, 28 * 28, 448 * 448)
        assert pol.seen_size(1001, 667) == pol.budget.seen_size(1001, 667)
    assert pol.seen_size(1001, 667) == (544, 352)  # factor 32; 28 would give (532, 364)
    # a processor whose patches disagree with the vision tower is refused at load
    pol.processor.image_processor.patch_size = 14
    try:
        with pytest.raises(ValueError, match=r"patch_size x merge_size \(28\) differs"):
            Policy(pol.model, pol.processor)
    finally:
        pol.processor.image_processor.patch_size = 16


def test_families_have_one_owner() -> None:
    assert set(tiny.TINY_FAMILIES) < set(FAMILIES) and "qwen3_vl_moe" in FAMILIES
    with pytest.raises(ValueError, match="valid: qwen2_vl, qwen2_5_vl, qwen3_vl$"):
        tiny.make_tiny("qwen3_vl_moe")


def test_encode_images_keeps_the_seen_size(policy) -> None:
    a, b, c = image(84, 56), image(28, 280, seed=1), image(84, 56, seed=2)
    out = policy.encode_images([a, b, c])
    assert out["image_grid_thw"].tolist() == [[1, 4, 6], [1, 20, 2], [1, 4, 6]]
    assert out["pixel_values"].shape[0] == 4 * 6 + 20 * 2 + 4 * 6
    # batched encoding keeps the images in order (the processor groups them by shape)
    alone = torch.cat([policy.encode_images([im])["pixel_values"] for im in (a, b, c)])
    assert torch.equal(out["pixel_values"], alone)
    with pytest.raises(ValueError, match="at least one token"):
        policy.logprobs([Context([], [], "empty")])


def test_chat_tokens_match_the_processor_expansion(policy) -> None:
    imgs = [image(56, 84), image(112, 28, seed=1)]
    messages = [{"role": "user", "content": [{"type": "image", "image": imgs[0]},
                                             {"type": "text", "text": "Compare"},
                                             {"type": "image", "image": imgs[1]}]}]
    ours = policy.chat_tokens(messages, add_generation_prompt=True)
    text = policy.processor.apply_chat_template(messages, add_generation_prompt=True,
                                                tokenize=False)
    theirs = policy.processor(text=[text], images=imgs, return_tensors="pt")["input_ids"][0]
    assert ours == theirs.tolist()
    assert ours.count(policy.image_token_id) == 6 + 4


def test_chat_tokens_continuation_appends_exactly(policy) -> None:
    img = image(56, 56)
    first = [{"role": "user", "content": [{"type": "image", "image": img},
                                          {"type": "text", "text": "Count."}]}]
    rest = [{"role": "assistant", "content": "<call_tool>zoom</call_tool>"},
            {"role": "tool", "content": [{"type": "text", "text": "zoomed"},
                                         {"type": "image", "size": (28, 56)}]}]
    whole = policy.chat_tokens(first + rest, add_generation_prompt=True)
    head = policy.chat_tokens(first)
    tail = policy.chat_tokens(rest, add_generation_prompt=True, continuation=True)
    assert head + tail == whole
    assert policy.decode(tail).startswith("<|im_start|>assistant\n<call_tool>")
    with pytest.raises(ValueError, match="tools"):
        policy.chat_tokens(rest, tools=[{"name": "zoom"}], continuation=True)


# ---------------------------------------------------------------- invariants
def _bad(policy: Policy) -> tuple[Context, int]:
    c = context(policy, [(2, 2), (2, 1)], "Which is bigger?", "sample-17")
    return c, c.token_ids.index(policy.image_token_id)


def test_missing_image_pad_is_rejected(policy) -> None:
    c, first = _bad(policy)
    broken = Context(c.token_ids[:first] + c.token_ids[first + 1:], c.images, c.id)
    for call in (lambda: policy.logprobs([broken]),
                 lambda: policy.generate([broken], max_new_tokens=2)):
        with pytest.raises(ImageTokenError, match=r"sample-17: 5 image pad tokens .* implies 6"):
            call()


def test_extra_image_is_rejected(policy) -> None:
    c, _ = _bad(policy)
    extra = Context(c.token_ids, c.images + [image(56, 56, seed=9)], c.id)
    with pytest.raises(ImageTokenError, match=r"sample-17: 6 image pad tokens .* implies 10"):
        policy.logprobs([extra])


def test_truncated_run_is_rejected(policy) -> None:
    c, first = _bad(policy)
    # 4 pads, <|vision_end|>, <|vision_start|>, then the second image keeps 1 of its 2 pads
    cut = Context(c.token_ids[:first + 7], c.images, c.id)
    with pytest.raises(ImageTokenError, match=r"sample-17: 5 image pad tokens .* implies 6"):
        policy.logprobs([cut])


def test_split_run_and_missing_bracket_are_rejected(policy) -> None:
    c, first = _bad(policy)
    text_id = c.token_ids[-1]
    split = Context(c.token_ids[:first + 2] + [text_id] + c.token_ids[first + 2:], c.images,
                    c.id)
    with pytest.raises(ImageTokenError, match=r"sample-17: image pad runs \[2, 2, 2\]"):
        policy.logprobs([split])
    ids = list(c.token_ids)
    ids[first - 1] = text_id  # <|vision_start|> replaced
    with pytest.raises(ImageTokenError, match="sample-17: image 0 .* not enclosed"):
        policy.logprobs([Context(ids, c.images, c.id)])


def test_invariants_name_the_failing_sample_in_a_batch(policy) -> None:
    good = three_contexts(policy)
    c, first = _bad(policy)
    broken = Context(c.token_ids[:first] + c.token_ids[first + 1:], c.images, "bad-one")
    with pytest.raises(ImageTokenError, match="bad-one"):
        policy.generate(good + [broken], max_new_tokens=2)


# ---------------------------------------------------------------- LoRA and saving
def _perturbed_lora(path: Path, settings: LoraSettings) -> Policy:
    pol = Policy.from_pretrained(path, lora=settings)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in pol.model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: make the adapters matter
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    pol.model.eval()
    return pol


def test_lora_adapters_save_and_reload(paths, tmp_path: Path) -> None:
    base = paths["qwen2_5_vl"]
    pol = _perturbed_lora(base, LoraSettings(rank=4, alpha=8, dropout=0.0))
    contexts = three_contexts(pol)
    with torch.no_grad():
        want = pol.logprobs(contexts)
        plain = Policy.from_pretrained(base).logprobs(contexts)
    assert max((a - b).abs().max().item() for a, b in zip(want, plain)) > 1e-3

    pol.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    reloaded = Policy.from_pretrained(base, adapter=str(tmp_path / "adapter"))
    with torch.no_grad():
        got = reloaded.logprobs(contexts)
    assert all(torch.equal(a, b) for a, b in zip(want, got))

    pol.save_pretrained(tmp_path / "merged", merged=True)
    merged = Policy.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    with torch.no_grad():
        got = merged.logprobs(contexts)
        still = pol.logprobs(contexts)  # saving merged left the adapters in place
    assert max((a - b).abs().max().item() for a, b in zip(want, got)) < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(want, still))


def test_full_weights_save_and_reload(policy, tmp_path: Path) -> None:
    contexts = three_contexts(policy)
    policy.save_pretrained(tmp_path / "full")
    again = Policy.from_config(PolicyConfig(path=str(tmp_path / "full"), device="cpu"))
    with torch.no_grad():
        for a, b in zip(policy.logprobs(contexts), again.logprobs(contexts)):
            assert torch.equal(a, b)


def test_train_vision_switch(paths) -> None:
    frozen = Policy.from_pretrained(paths["qwen2_5_vl"], lora=LoraSettings(rank=2))
    visual = [(n, p) for n, p in frozen.model.named_parameters() if ".visual." in n]
    assert visual and not any(p.requires_grad for _, p in visual)
    assert not any("lora_" in n for n, _ in visual)
    lm = [n for n, p in frozen.model.named_parameters() if p.requires_grad]
    assert lm and all("lora_" in n and "language_model" in n for n in lm)

    trained = Policy.from_pretrained(paths["qwen2_5_vl"],
                                     lora=LoraSettings(rank=2, train_vision=True))
    vis_lora = [n for n, p in trained.model.named_parameters()
                if ".visual." in n and "lora_" in n and p.requires_grad]
    assert any(".attn.qkv." in n for n in vis_lora) and any("merger" in n for n in vis_lora)


def test_unknown_dtype_is_rejected(paths) -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        Policy.from_pretrained(paths["qwen2_5_vl"], dtype="float8")


def test_chunked_logps_match_full_softmax_with_grads() -> None:
    from vlmagent.modelio import chunked_logps, token_logps

    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(11, 8, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (11,), generator=gen)
    full = torch.log_softmax(head(hidden) / 0.7, -1).gather(-1, targets[:, None]).squeeze(-1)
    chunked = chunked_logps(hidden, head, targets, 0.7, chunk=3)
    assert torch.allclose(full, chunked, atol=1e-6)
    g_full = torch.autograd.grad(full.sum(), [hidden, head.weight])
    g_chunk = torch.autograd.grad(chunked.sum(), [hidden, head.weight])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_full, g_chunk))
    assert torch.allclose(token_logps(head(hidden), targets, 1.0),
                          torch.log_softmax(head(hidden), -1)[torch.arange(11), targets])


def test_policy_config_sections_load_strictly() -> None:
    from vlmagent.config import ConfigError, from_dict

    cfg = from_dict(PolicyConfig, {"path": "m", "lora": {"rank": 4, "train_vision": True}}, "t")
    assert cfg.lora == LoraSettings(rank=4, train_vision=True)
    assert from_dict(PolicyConfig, {"lora": None}, "t").lora is None
    with pytest.raises(ConfigError, match="lora.rnak"):
        from_dict(PolicyConfig, {"lora": {"rnak": 4}}, "t")


def test_shared_images_encoded_once_give_the_same_logps_and_grads(policy) -> None:
    """A GRPO group repeats its prompt image: the vision tower runs once per unique image, and
    log-probs and gradients equal those of encoding every copy."""
    from vlmagent.policy import dedupe_images

    # sizes in visual tokens (context() multiplies by the factor): 24 tokens, not 4704
    c = context(policy, [(4, 6)], "Describe.", "a")
    other = context(policy, [(6, 4)], "Other.", "b")
    group = [c, Context(list(c.token_ids), [c.images[0].copy()], "a2"), other,
             Context(list(c.token_ids) + list(c.token_ids[-3:]), [c.images[0].copy()], "a3")]
    assert dedupe_images([im for x in group for im in x.images])[1] == [0, 0, 1, 0]
    calls = []
    hook = policy.core.model.visual.register_forward_hook(
        lambda mod, inp, out: calls.append(inp[0].shape[0]))
    shared = policy.logprobs(group)
    with torch.no_grad():
        policy.logprobs([c, other])  # the two unique images, plain path
    hook.remove()
    assert len(calls) == 2 and calls[0] == calls[1]  # the group encoded only its 2 unique images
    sum(x.sum() for x in shared).backward()
    g_shared = [p.grad.clone() for p in policy.core.model.visual.parameters()]
    policy.model.zero_grad()
    alone = [policy.logprobs([x])[0] for x in group]  # one image per call: the plain path
    sum(x.sum() for x in alone).backward()
    g_alone = [p.grad.clone() for p in policy.core.model.visual.parameters()]
    policy.model.zero_grad()
    for a, b in zip(shared, alone):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(g_shared, g_alone):  # float sums in another order: compare relatively
        assert (a - b).abs().max() <= 1e-4 * a.abs().max().clamp(min=1.0)

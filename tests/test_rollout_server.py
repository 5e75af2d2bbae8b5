"""The rollout engine behind the Actor interface, against the LOOPBACK server: a test stand-in
for vLLM / SGLang that runs the tiny model on CPU behind the same HTTP request shapes
(vlmagent/engines/loopback.py). These tests check the client, the wire formats, weight sync,
the train-vs-rollout log-prob gap and TIS; they say nothing about a real server's numerics."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vlmagent import agent, config, trajectory
from vlmagent.config import AgentConfig, LoraSettings, RolloutConfig
from vlmagent.domains import zoomqa
from vlmagent.engines import training
from vlmagent.engines.loopback import LoopbackServer
from vlmagent.engines.openai_server import ServerActor, ServerClient, ServerError
from vlmagent.losses import grpo_loss, gspo_loss, tis_weights
from vlmagent.policy import Context, Policy
from vlmagent.protocol import FORMATS
from vlmagent.types import ToolCall

HERMES = FORMATS["hermes"]


@pytest.fixture(scope="module")
def policy(tiny):
    return Policy.from_pretrained(tiny)


@pytest.fixture(scope="module")
def loopback(tiny):
    """The stand-in server on its own copy of the tiny model (the trainer's stays separate)."""
    with LoopbackServer(Policy.from_pretrained(tiny), model_name="tiny") as srv:
        yield srv


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return zoomqa.make_samples(2, seed=5, out_dir=tmp_path_factory.mktemp("zq"), size=(1001, 667))


def acfg(**kw) -> AgentConfig:
    base = dict(min_pixels=56 * 56, max_pixels=448 * 448, max_new_tokens=12, temperature=1.0,
                max_turns=3)
    return AgentConfig(**{**base, **kw})


def rcfg(srv: LoopbackServer, **kw) -> RolloutConfig:
    return RolloutConfig(**{"engine": "openai", "base_url": srv.url, "model": "tiny",
                            "timeout_s": 60.0, **kw})


class ZoomThenServer:
    """First turn scripted (a real zoom call), then the server: sampled turns that see the
    tool's image, so the requests carry two images and the episode is multi-turn."""

    scripted = False

    def __init__(self, policy, server_actor):
        call = HERMES.render_call(ToolCall("zoom", {"bbox": [50, 50, 250, 250]}))
        self.script = agent.ScriptedActor(policy, lambda ep: ["<think_with_tools>" + call])
        self.server = server_actor

    def __call__(self, episodes, cfg, stop, seed):
        first = [e for e in episodes if e.n_assistant == 0]
        rest = [e for e in episodes if e.n_assistant > 0]
        out = dict(zip(map(id, first), self.script(first, cfg, stop, seed))) if first else {}
        if rest:
            out.update(zip(map(id, rest), self.server(rest, cfg, stop, seed)))
        return [out[id(e)] for e in episodes]


def sampled_gap(policy, trajs, skip_zero: bool = False) -> float:
    """max |trainer logp - rollout logp| over the sampled tokens (scripted ones carry 0.0)."""
    lps = policy.logprobs([trajectory.context(t) for t in trajs])
    worst = 0.0
    for t, lp in zip(trajs, lps):
        pos = [p for p, m in enumerate(t.loss_mask) if m]
        got = torch.tensor([lp[p - 1].item() for p in pos])
        ref = torch.tensor(t.logps)
        keep = ref != 0.0 if skip_zero else torch.ones_like(ref, dtype=torch.bool)
        assert keep.sum() > 0
        worst = max(worst, (got[keep] - ref[keep]).abs().max().item())
    return worst


def pad_run_lengths(ids, pad):
    runs, n = [], 0
    for t in ids + [None]:
        if t == pad:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


# ---------------------------------------------------------------- the actor
def test_loopback_server_actor_same_ids_as_policy_actor_and_trainer_logps(policy, loopback,
                                                                          samples):
    actor = ServerActor(policy, rcfg(loopback))
    # one episode, same seed: the server draws exactly what the in-process actor draws
    [a] = agent.rollout(policy, samples[:1], acfg(), actor=actor, seed=3)
    [b] = agent.rollout(policy, samples[:1], acfg(), seed=3)
    assert a.token_ids == b.token_ids and a.loss_mask == b.loss_mask
    assert max(abs(x - y) for x, y in zip(a.logps, b.logps)) < 1e-5
    # multi-turn image episodes (zoom, then sampled turns that see its image), a group of 2
    n0 = len(loopback.log)
    trajs = agent.rollout(policy, samples, acfg(), actor=ZoomThenServer(policy, actor), seed=4,
                          group_size=2)
    assert [len(t.images) for t in trajs] == [2, 2, 2, 2]
    assert all([x.role for x in t.turns][:5] == ["system", "user", "assistant", "tool",
                                                   "assistant"] for t in trajs)
    for t in trajs:  # images counted exactly: one pad run per image, as long as its grid says
        want = [policy.tokens_per_image(im.size) for im in t.images]
        assert pad_run_lengths(t.token_ids, policy.image_token_id) == want
    reqs = [b for p, b in loopback.log[n0:] if p == "/generate"]
    assert len(reqs) == 4  # one per episode for the one sampled round (the zoom was scripted)
    for body in reqs:  # exact ids, a prefix of an episode (requests arrive in any order)
        n = len(body["input_ids"])
        assert any(t.token_ids[:n] == body["input_ids"] and t.loss_mask[n] == 1 for t in trajs)
        assert len(body["image_data"]) == 2  # the prompt's image and the zoom's
    assert len({tuple(b["input_ids"]) for b in reqs}) == 2  # group members share the prompt
    gap = sampled_gap(policy, trajs, skip_zero=True)
    print("max |trainer - loopback server| logp:", gap)
    assert gap < 1e-4


def test_vllm_wire_is_text_only(policy, loopback):
    actor = ServerActor(policy, rcfg(loopback, wire="vllm"))
    ids = policy.chat_tokens([{"role": "user", "content": "Count."}], add_generation_prompt=True)
    p = actor.params(acfg(max_new_tokens=9), "</tool_call>", 11)
    g = actor.generate(Context(ids, [], "t"), p)
    [want] = policy.generate([Context(ids, [], "t")], 9, stop_strings=("</tool_call>",), seed=11)
    assert (g.token_ids, g.stop, g.text) == (want.token_ids, want.stop, want.text)
    assert max(abs(x - y) for x, y in zip(g.logps, want.logps)) < 1e-5
    path, body = loopback.log[-1]
    assert path == "/v1/completions" and body["return_tokens_as_token_ids"] is True
    assert body["prompt"] == ids and body["model"] == "tiny"
    from PIL import Image

    with pytest.raises(ValueError, match="no images"):
        actor.generate(Context(ids, [Image.new("RGB", (56, 56))], "t"), p)


def test_client_errors_name_the_request_and_only_retry_what_can_pass(loopback):
    waits = []
    client = ServerClient(rcfg(loopback, retries=2), sleep=waits.append)
    n0 = len(loopback.log)
    with pytest.raises(ServerError, match="not loaded") as e:  # a 400: not retried
        client.unload_lora("no-such-adapter")
    assert "1 attempt" in str(e.value) and len(loopback.log) == n0 + 1 and waits == []
    dead = ServerClient(RolloutConfig(base_url="http://127.0.0.1:9", retries=2, timeout_s=2),
                        sleep=waits.append)
    with pytest.raises(ServerError, match=r"127\.0\.0\.1:9/generate failed after 3 attempt"):
        dead.post("/generate", {})
    assert waits == [0.5, 1.0]


# ---------------------------------------------------------------- weight sync
def _stage_run(tmp_path: Path, policy, **stage):
    from vlmagent.config import StageConfig, resolve_stage
    from vlmagent.train.common import StageRun, make_accelerator

    st = resolve_stage(StageConfig(), StageConfig(kind="grpo", name="grpo", **stage))
    out = tmp_path / st.name
    out.mkdir(parents=True, exist_ok=True)
    return StageRun(st, policy, make_accelerator(out), out, 0)


def test_lora_sync_the_server_follows_the_trainer(tiny, loopback, samples, tmp_path):
    pol = Policy.from_pretrained(tiny, lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    run = _stage_run(tmp_path, pol)
    cfg = SimpleNamespace(rollout=rcfg(loopback))
    actor = training.actor_for(run, cfg)  # first use: the adapter as it is goes to the server
    assert actor.adapter == "grpo-u0" and "grpo-u0" in loopback.adapters
    before = agent.rollout(pol, samples[:1], acfg(), actor=actor, seed=5, group_size=2)
    assert sampled_gap(pol, before) < 1e-4
    with torch.no_grad():  # an "optimiser step": every LoRA B matrix moves
        g = torch.Generator().manual_seed(0)
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    run.updates += 1
    stale = agent.rollout(pol, samples[:1], acfg(), actor=actor, seed=5, group_size=2)
    stale_gap = sampled_gap(pol, stale)
    assert stale_gap > 1e-2  # the server still samples from the old adapter
    assert training.actor_for(run, cfg) is actor  # syncs: u1 loaded, u0 unloaded
    assert actor.adapter == "grpo-u1" and set(loopback.adapters) == {"grpo-u1"}
    after = agent.rollout(pol, samples[:1], acfg(), actor=actor, seed=5, group_size=2)
    gap = sampled_gap(pol, after)
    print(f"logp gap: stale adapter {stale_gap:.3g}, after sync {gap:.3g}")
    assert gap < 1e-4
    assert [t.logps for t in after] != [t.logps for t in before]  # the server's logps changed
    assert not (tmp_path / "grpo" / "rollout_weights" / "grpo-u0").exists()  # old one removed
    assert (tmp_path / "grpo" / "rollout_weights" / "grpo-u1" / "adapter_config.json").is_file()
    loopback._unload("grpo-u1")  # leave the shared server as the other tests expect it


# ---------------------------------------------------------------- TIS math
def test_tis_weights_and_the_weighted_losses():
    old = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-1.0, -3.0, 0.0, 0.0]])
    roll = torch.tensor([[-1.5, -1.0, -0.5, 9.0], [-0.2, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    w = tis_weights(old, roll, mask, cap=1.5)
    want = torch.tensor([[min(math.exp(0.5), 1.5), math.exp(-1.0), 1.0, 0.0],
                         [math.exp(-0.8), math.exp(-2.0), 0.0, 0.0]])
    assert torch.allclose(w, want)  # exp(0.5) = 1.65 is capped at 1.5; padding gets 0
    ws = tis_weights(old, roll, mask, cap=10.0, sequence=True)
    assert torch.allclose(ws, torch.tensor([math.exp(-0.5 / 3), math.exp(-2.8 / 2)]))
    with pytest.raises(ValueError, match="> 0"):
        tis_weights(old, roll, mask, cap=0.0)

    lp = (old + torch.tensor([[0.1, -0.1, 0.3, 0.0], [0.0, 0.05, 0.0, 0.0]])).requires_grad_()
    adv = torch.tensor([1.0, -2.0])
    loss, m = grpo_loss(lp, old, adv, mask, 0.2, 0.2, token_level=True, is_weights=w)
    rho = torch.exp(lp.detach() - old)
    per = -torch.min(rho * adv[:, None], rho.clamp(0.8, 1.2) * adv[:, None]) * w
    assert loss.item() == pytest.approx((per * mask).sum().item() / 5, rel=1e-6)
    plain, _ = grpo_loss(lp, old, adv, mask, 0.2, 0.2, token_level=True)
    ones, _ = grpo_loss(lp, old, adv, mask, 0.2, 0.2, token_level=True,
                        is_weights=torch.ones_like(lp))
    assert ones.item() == pytest.approx(plain.item())
    # the gradient of each token is scaled by its weight
    (g_w,) = torch.autograd.grad(loss, lp)
    (g_1,) = torch.autograd.grad(plain, lp)
    assert torch.allclose(g_w, g_1 * w)
    s_loss, _ = gspo_loss(lp, old, adv, mask, is_weights=ws)
    s_plain, _ = gspo_loss(lp, old, adv, mask)
    seq = torch.exp(((lp.detach() - old) * mask).sum(1) / mask.sum(1))
    per_seq = -torch.min(seq * adv, seq.clamp(1 - 3e-4, 1 + 4e-4) * adv)
    assert s_loss.item() == pytest.approx((per_seq * ws).mean().item(), rel=1e-6)
    assert s_plain.item() == pytest.approx(per_seq.mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"\[B\]"):
        gspo_loss(lp, old, adv, mask, is_weights=w)


# ---------------------------------------------------------------- one online step
def test_online_grpo_step_through_the_loopback_server(tiny, loopback, tmp_path, monkeypatch):
    """One GRPO step whose rollouts come from the loopback server: the trainer recomputes the
    old logps, logs the gap (~0 on the stand-in: same model, same CPU kernels), learns, and the
    next rollout first syncs the updated adapter."""
    from vlmagent.domains import DOMAINS
    from vlmagent.train import online

    dense = SimpleNamespace(**vars(zoomqa))  # a dense answer check: every group has a spread
    dense.check = lambda text, s: sum(c in "aeiou" for c in text) / max(1, len(text))
    monkeypatch.setitem(DOMAINS, "dense", dense)
    cfg = config.load(None, [f"domain.data_dir={tmp_path / 'data'}", "domain.kinds=[color]",
                             "domain.size=[448, 336]", "agent.max_pixels=50176",
                             "rollout.engine=openai", f"rollout.base_url={loopback.url}",
                             "rollout.model=tiny"])
    pol = Policy.from_pretrained(tiny, lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    run = _stage_run(tmp_path, pol, domain="dense", batch_size=2, group_size=3,
                     max_new_tokens=10, lr=3e-3, n_train=8, tis_cap=2.0)
    n0 = len(loopback.log)
    before = [p.detach().clone() for p in run.trainable()]
    m = online.online_step(run, cfg, None)
    gens = [b for p, b in loopback.log[n0:] if p == "/generate"]
    assert len(gens) == 6 and all(b["lora_path"] == "grpo-u0" for b in gens)
    print("rollout/logp_gap", m["rollout/logp_gap"], "max", m["rollout/logp_gap_max"])
    assert m["rollout/logp_gap"] < 1e-5 and m["rollout/logp_gap_max"] < 1e-4
    assert m["rollout/tis_capped"] == 0.0 and m["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert any((a != b).any() for a, b in zip(before, run.trainable()))
    assert run.updates == 1  # one optimiser update; the next rollout syncs it first
    assert training.actor_for(run, cfg).adapter == f"grpo-u{run.updates}" != "grpo-u0"
    loopback._unload(f"grpo-u{run.updates}")


def test_full_weight_sync_through_update_weights_from_disk(tiny, tmp_path, samples):
    """weight_sync full (SGLang's /update_weights_from_disk) on a full-weight policy: a
    changed weight reaches the server (its own loopback, so the shared one stays as it is)."""
    pol = Policy.from_pretrained(tiny)
    run = _stage_run(tmp_path, pol)
    with LoopbackServer(Policy.from_pretrained(tiny)) as srv:
        cfg = SimpleNamespace(rollout=rcfg(srv, weight_sync="full"))
        actor = training.actor_for(run, cfg)
        assert actor.adapter is None
        with torch.no_grad():
            pol.core.lm_head.weight.add_(0.5 * torch.randn(pol.core.lm_head.weight.shape,
                                                           generator=torch.Generator()
                                                           .manual_seed(1)))
        run.updates += 1
        stale = agent.rollout(pol, samples[:1], acfg(), actor=actor, seed=2)
        assert sampled_gap(pol, stale) > 1e-2
        training.actor_for(run, cfg)
        assert [p for p, _ in srv.log].count("/update_weights_from_disk") == 2
        fresh = agent.rollout(pol, samples[:1], acfg(), actor=actor, seed=2)
        assert sampled_gap(pol, fresh) < 1e-4

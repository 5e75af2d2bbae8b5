"""vlmagent.losses: hand-computed values, clipping, normalisation, gradients, masks, NaN-safety,
errors, and a cross-check against TRL 1.16's own loss code (TRL is a test-only dependency).

Hand values are written out in comments; logsigmoid(x) = -log(1 + e^-x).
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vlmagent.losses import (
    bco_pair_loss,
    dpo_loss,
    group_advantages,
    grpo_loss,
    gspo_loss,
    k3_kl,
    masked_mean,
    mpo_loss,
    sft_loss,
)

D = torch.float64
LN = math.log


def t(x, **kw) -> torch.Tensor:
    return torch.tensor(x, dtype=D, **kw)


def approx(x: float, rel: float = 1e-6):
    return pytest.approx(x, rel=rel, abs=1e-9)


# ---------------------------------------------------------------- helpers and advantages


def test_masked_mean_all_dims_and_rows():
    x = t([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = t([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, m).item() == approx(2.0)  # (1 + 2 + 3) / 3
    assert masked_mean(x, m, dim=1).tolist() == [1.5, 3.0]  # (1+2)/2, 3/1
    empty = masked_mean(x, torch.zeros_like(m), dim=1)
    assert empty.tolist() == [0.0, 0.0]  # nothing kept -> 0, not NaN


def test_k3_kl_by_hand():
    # d = ref - logp. d = ln 2: 2 - ln 2 - 1 = 0.306853;  d = -ln 2: 0.5 + ln 2 - 1 = 0.193147
    kl = k3_kl(t([0.0, 0.0, -1.0]), t([LN(2), -LN(2), -1.0]))
    assert kl.tolist() == pytest.approx([0.3068528194, 0.1931471806, 0.0])


def test_group_advantages_population_std():
    # group [1, 2, 3]: mean 2, population std sqrt(2/3) = 0.816497 -> [-1.224745, 0, 1.224745]
    # (the unbiased std would be 1 and give [-1, 0, 1]); group [0, 0, 0]: std 0 -> 0 / eps = 0
    adv = group_advantages(t([1.0, 2.0, 3.0, 0.0, 0.0, 0.0]), group_size=3)
    assert adv.tolist() == pytest.approx([-1.2247449, 0.0, 1.2247449, 0.0, 0.0, 0.0], rel=1e-5)
    raw = group_advantages(t([1.0, 2.0, 3.0, 0.0, 0.0, 4.0]), 3, scale_by_std=False)
    assert raw.tolist() == pytest.approx([-1.0, 0.0, 1.0, -4 / 3, -4 / 3, 8 / 3])  # r - mean
    # [0, 4]: mean 2, pop std 2 -> [-1, 1] (with eps = 0 exactly)
    assert group_advantages(t([0.0, 4.0]), 2, eps=0.0).tolist() == [-1.0, 1.0]


def test_group_advantages_errors():
    with pytest.raises(ValueError, match=r"batch size 5 is not divisible by group_size 2"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match=r"group_size 0"):
        group_advantages(torch.zeros(4), 0)
    with pytest.raises(ValueError, match=r"1-D"):
        group_advantages(torch.zeros(2, 2), 2)


# ---------------------------------------------------------------- GRPO


def _grpo_case():
    # seq 0 (A = +1, 2 tokens): log ratios [ln 1.5, ln 0.5], 3rd position is padding
    # seq 1 (A = -1, 3 tokens): log ratios [ln 1.5, ln 0.5, ln 1.1]
    old = t([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]])
    logps = old + t([[LN(1.5), LN(0.5), 7.0], [LN(1.5), LN(0.5), LN(1.1)]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    return logps, old, t([1.0, -1.0]), mask


def test_grpo_by_hand_sequence_and_token_level():
    # eps 0.2: clip(r) in [0.8, 1.2]; per-token loss = -min(r A, clip(r) A)
    # seq 0, A=+1: r=1.5 -> -min(1.5, 1.2) = -1.2 (clipped high);  r=0.5 -> -min(0.5, 0.8) = -0.5
    # seq 1, A=-1: r=1.5 -> -min(-1.5, -1.2) = 1.5;  r=0.5 -> -min(-0.5, -0.8) = 0.8 (clipped low)
    #              r=1.1 -> 1.1
    # sequence level: ((-1.2 - 0.5)/2 + (1.5 + 0.8 + 1.1)/3) / 2 = (-0.85 + 1.133333) / 2 = 0.141667
    # token level (DAPO): (-1.2 - 0.5 + 1.5 + 0.8 + 1.1) / 5 = 1.7 / 5 = 0.34
    logps, old, adv, mask = _grpo_case()
    seq, m = grpo_loss(logps, old, adv, mask)
    tok, m_tok = grpo_loss(logps, old, adv, mask, token_level=True)
    assert seq.item() == approx(0.1416667, rel=1e-5)
    assert tok.item() == approx(0.34)
    assert m["clip_fraction"] == approx(0.4)  # 2 of 5 masked tokens
    assert m["ratio_mean"] == approx(1.02)  # (1.5 + 0.5 + 1.5 + 0.5 + 1.1) / 5
    assert m["loss"] == approx(seq.item()) and m_tok["loss"] == approx(0.34)
    assert "kl" not in m
    assert all(isinstance(v, float) for v in (*m.values(), *m_tok.values()))


def test_grpo_equal_lengths_make_both_normalisations_agree():
    logps, old, adv, _ = _grpo_case()
    full = torch.ones_like(logps)
    assert grpo_loss(logps, old, adv, full)[0].item() == approx(
        grpo_loss(logps, old, adv, full, token_level=True)[0].item())


def test_grpo_gradient_is_zero_where_clipped():
    # sequence level, B = 2: d loss / d logp_t = -r_t A / (n_i B) where not clipped, 0 where clipped
    # seq 0: [0 (clipped), -0.5 * 1 / 4 = -0.125, 0 (pad)]
    # seq 1: [1.5 / 6 = 0.25, 0 (clipped), 1.1 / 6 = 0.183333]
    logps, old, adv, mask = _grpo_case()
    logps.requires_grad_(True)
    grpo_loss(logps, old, adv, mask)[0].backward()
    assert logps.grad.tolist() == [pytest.approx([0.0, -0.125, 0.0]),
                                   pytest.approx([0.25, 0.0, 1.1 / 6])]


@pytest.mark.parametrize(
    ("ratio", "adv", "eps_low", "eps_high", "expected", "clipped"),
    [
        (1.25, 1.0, 0.2, 0.2, -1.2, True),  # high side, A > 0: capped at 1 + eps_high
        (1.25, 1.0, 0.2, 0.28, -1.25, False),  # clip-higher (DAPO) leaves 1.25 alone
        (0.7, 1.0, 0.2, 0.2, -0.7, False),  # low side, A > 0: min keeps the smaller r A
        (0.7, -1.0, 0.2, 0.2, 0.8, True),  # low side, A < 0: floored at 1 - eps_low
        (0.7, -1.0, 0.35, 0.2, 0.7, False),  # wider eps_low: not clipped
        (1.25, -1.0, 0.2, 0.2, 1.25, False),  # high side, A < 0: pessimistic r A kept
    ],
)
def test_grpo_clipping_both_sides(ratio, adv, eps_low, eps_high, expected, clipped):
    logps = t([[LN(ratio)]])
    loss, m = grpo_loss(logps, t([[0.0]]), t([adv]), t([[1.0]]), eps_low=eps_low,
                        eps_high=eps_high)
    assert loss.item() == approx(expected)
    assert m["clip_fraction"] == (1.0 if clipped else 0.0)


def test_grpo_kl_term_by_hand():
    # ratio 1 and A = 0 -> policy term 0. k3 per token: 0.306853 and 0.193147 (see k3 test),
    # mean 0.25; loss = 0.1 * 0.25 = 0.025. The padded 3rd token (ref far away) must not count.
    logps = t([[0.0, 0.0, 0.0]])
    ref = t([[LN(2), -LN(2), 50.0]])
    mask = t([[1, 1, 0]])
    loss, m = grpo_loss(logps, logps, t([0.0]), mask, ref_logps=ref, kl_coef=0.1)
    assert loss.item() == approx(0.025) and m["kl"] == approx(0.25)
    # ref given but kl_coef 0: KL is reported, not added
    loss0, m0 = grpo_loss(logps, logps, t([0.0]), mask, ref_logps=ref)
    assert loss0.item() == 0.0 and m0["kl"] == approx(0.25)


def test_grpo_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"kl_coef=0.1 > 0 needs ref_logps"):
        grpo_loss(x, x, torch.zeros(2), x, kl_coef=0.1)
    with pytest.raises(ValueError, match=r"advantages must be \[B\] = \[2\]; got \(3,\)"):
        grpo_loss(x, x, torch.zeros(3), x)
    with pytest.raises(ValueError, match=r"logps and mask must both be \[B, T\]"):
        grpo_loss(x, x, torch.zeros(2), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"old_logps must have the shape of logps \(2, 3\)"):
        grpo_loss(x, torch.zeros(2, 2), torch.zeros(2), x)
    with pytest.raises(ValueError, match=r"ref_logps must have the shape"):
        grpo_loss(x, x, torch.zeros(2), x, ref_logps=torch.zeros(3))


# ---------------------------------------------------------------- GSPO


def test_gspo_by_hand():
    # eps_low = eps_high = 0.05 -> clip(s) in [0.95, 1.05]
    # seq 0: mean log ratio (0.2 + 0)/2 = 0.1, s = e^0.1 = 1.105171, A = +1 -> -1.05 (clipped)
    # seq 1: only token 0 kept: s = e^-0.2 = 0.818731, A = -1
    #        -> -min(-0.818731, -0.95) = 0.95 (clipped)
    # seq 2: mean (0.02 + 0)/2 = 0.01, s = 1.010050, A = +2 -> -2.020100
    # loss = (-1.05 + 0.95 - 2.020100) / 3 = -0.706700; clip_fraction 2/3
    old = torch.zeros(3, 2, dtype=D)
    logps = t([[0.2, 0.0], [-0.2, 9.0], [0.02, 0.0]], requires_grad=True)
    mask = t([[1, 1], [1, 0], [1, 1]])
    loss, m = gspo_loss(logps, old, t([1.0, -1.0, 2.0]), mask, eps_low=0.05, eps_high=0.05)
    assert loss.item() == approx(-0.7067001)
    assert m["clip_fraction"] == approx(2 / 3)
    assert m["ratio_mean"] == approx((1.1051709 + 0.8187308 + 1.0100502) / 3)
    # gradient only through unclipped seq 2: -A s / n / B = -2 * 1.010050 / 2 / 3 = -0.336683
    loss.backward()
    assert logps.grad.tolist() == [[0.0, 0.0], [0.0, 0.0],
                                   pytest.approx([-0.3366834, -0.3366834])]


def test_gspo_default_asymmetric_eps():
    # defaults eps_low 3e-4, eps_high 4e-4. s = e^0.001 = 1.0010005, A = +1 -> capped at 1.0004
    # s = e^-0.001 = 0.9990005, A = -1 -> floored at 0.9997 -> loss 0.9997
    one = torch.ones(1, 1, dtype=D)
    z = torch.zeros(1, 1, dtype=D)
    assert gspo_loss(one * 1e-3, z, t([1.0]), one)[0].item() == approx(-1.0004)
    assert gspo_loss(-one * 1e-3, z, t([-1.0]), one)[0].item() == approx(0.9997)
    # inside the band: s = e^1e-4 = 1.0001, not clipped
    loss, m = gspo_loss(one * 1e-4, z, t([1.0]), one)
    assert loss.item() == approx(-math.exp(1e-4)) and m["clip_fraction"] == 0.0


def test_gspo_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"advantages must be \[B\]"):
        gspo_loss(x, x, torch.zeros(2, 1), x)
    with pytest.raises(ValueError, match=r"old_logps must have the shape"):
        gspo_loss(x, torch.zeros(3, 3), torch.zeros(2), x)


# ---------------------------------------------------------------- DPO, BCO, MPO, SFT

# pair 0: h_c = 0.1 * (-10 + 12) = 0.2, h_r = 0.1 * (-8 + 7) = -0.1
# pair 1: h_c = 0.1 * (-5 + 5) = 0.0,  h_r = 0.1 * (-5 + 6) = 0.1
PAIR = dict(chosen_logps=t([-10.0, -5.0]), rejected_logps=t([-8.0, -5.0]),
            ref_chosen_logps=t([-12.0, -5.0]), ref_rejected_logps=t([-7.0, -6.0]))


def test_dpo_by_hand():
    # -logsigmoid(0.2 + 0.1) = log(1 + e^-0.3) = 0.554355; -logsigmoid(0 - 0.1) = 0.744397
    # mean 0.649376; margins 0.3 and -0.1 -> 0.1; accuracy 1/2
    loss, m = dpo_loss(**PAIR)
    assert loss.item() == approx(0.6493760)
    assert m["reward_margin"] == approx(0.1) and m["accuracy"] == 0.5
    assert m["reward_chosen"] == approx(0.1) and m["reward_rejected"] == approx(0.0)


def test_bco_pair_by_hand():
    # delta 0: pair 0: -ls(0.2) - ls(0.1) = 0.598139 + 0.644397 = 1.242536
    #          pair 1: -ls(0.0) - ls(-0.1) = 0.693147 + 0.744397 = 1.437544   -> mean 1.340040
    # delta 0.2: pair 0: -ls(0.2 - 0.2) - ls(-(-0.1 - 0.2)) = 0.693147 + 0.554355 = 1.247502
    #            pair 1: -ls(0.0 - 0.2) - ls(-(0.1 - 0.2)) = 0.798139 + 0.644397 = 1.442536
    #            -> mean 1.345019
    assert bco_pair_loss(**PAIR)[0].item() == approx(1.3400397)
    assert bco_pair_loss(**PAIR, delta=0.2)[0].item() == approx(1.3450190)


def test_mpo_by_hand():
    # per-token NLL of chosen: mean(10 / 4, 5 / 5) = 1.75
    # 0.8 * 0.649376 + 0.2 * 1.340040 + 1.0 * 1.75 = 2.537509
    loss, m = mpo_loss(**PAIR, chosen_lengths=torch.tensor([4, 5]))
    assert loss.item() == approx(2.5375087)
    assert m["dpo_loss"] == approx(0.6493760) and m["bco_loss"] == approx(1.3400397)
    assert m["sft_loss"] == approx(1.75) and m["accuracy"] == 0.5
    assert all(isinstance(v, float) for v in m.values())
    # weights are honoured: only the generation term
    assert mpo_loss(**PAIR, chosen_lengths=t([4, 5]), weights=(0, 0, 1))[0].item() == approx(1.75)


def test_preference_errors():
    with pytest.raises(ValueError, match=r"preference inputs must all be \[B\]"):
        dpo_loss(t([1.0, 2.0]), t([1.0]), t([1.0, 2.0]), t([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"preference inputs must all be \[B\]"):
        bco_pair_loss(t([[1.0]]), t([[1.0]]), t([[1.0]]), t([[1.0]]))
    with pytest.raises(ValueError, match=r"weights must be \(preference, quality, generation\)"):
        mpo_loss(**PAIR, chosen_lengths=t([4, 5]), weights=(0.8, 0.2))
    with pytest.raises(ValueError, match=r"chosen_lengths must be \[B\]"):
        mpo_loss(**PAIR, chosen_lengths=t([4, 5, 6]))


def test_sft_by_hand_and_empty_mask():
    # token level over the batch: (1 + 2 + 3) / 3 = 2.0 (per-sequence averaging would give 2.25)
    logps = t([[-1.0, -2.0, -9.0], [-3.0, -9.0, -9.0]], requires_grad=True)
    mask = t([[1, 1, 0], [1, 0, 0]])
    loss, m = sft_loss(logps, mask)
    assert loss.item() == approx(2.0) and m["num_tokens"] == 3.0
    empty, _ = sft_loss(logps, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    assert logps.grad.abs().sum().item() == 0.0
    with pytest.raises(ValueError, match=r"logps and mask must both be \[B, T\]"):
        sft_loss(logps, mask[:, :2])


# ---------------------------------------------------------------- gradients, masks, NaN-safety


def _rand(*shape, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D) * scale


def test_gradcheck_float64():
    B, T = 3, 4
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    old, ref = _rand(B, T, seed=1) - 2, _rand(B, T, seed=2) - 2
    adv = t([1.0, -0.5, 2.0])
    # log ratios ~0.5: some tokens clipped on each side; gradcheck perturbs by 1e-6 only
    logps = (old + _rand(B, T, scale=0.5, seed=3)).requires_grad_(True)
    for token_level in (False, True):
        def fn(lp, token_level=token_level):
            return grpo_loss(lp, old, adv, mask, 0.2, 0.28, ref, 0.05, token_level)[0]

        assert torch.autograd.gradcheck(fn, (logps,))
    small = (old + _rand(B, T, scale=0.01, seed=4)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda lp: gspo_loss(lp, old, adv, mask, 0.2, 0.2)[0], (small,))
    assert torch.autograd.gradcheck(lambda lp: gspo_loss(lp, old, adv, mask)[0], (small,))
    assert torch.autograd.gradcheck(lambda lp: sft_loss(lp, mask)[0], (logps,))
    c, r = _rand(B, seed=5).requires_grad_(True), _rand(B, seed=6).requires_grad_(True)
    rc, rr = _rand(B, seed=7), _rand(B, seed=8)
    assert torch.autograd.gradcheck(lambda a, b: dpo_loss(a, b, rc, rr)[0], (c, r))
    assert torch.autograd.gradcheck(lambda a, b: bco_pair_loss(a, b, rc, rr, 0.1, 0.3)[0], (c, r))
    lengths = t([3.0, 2.0, 4.0])
    assert torch.autograd.gradcheck(lambda a, b: mpo_loss(a, b, rc, rr, lengths)[0], (c, r))


def test_old_ref_and_advantages_get_no_grad():
    B, T = 2, 3
    mask = torch.ones(B, T, dtype=D)
    logps = _rand(B, T, seed=1).requires_grad_(True)
    old, ref = _rand(B, T, seed=2).requires_grad_(True), _rand(B, T, seed=3).requires_grad_(True)
    adv = t([1.0, -1.0], requires_grad=True)
    (grpo_loss(logps, old, adv, mask, ref_logps=ref, kl_coef=0.1)[0]
     + gspo_loss(logps, old, adv, mask)[0]).backward()
    assert logps.grad is not None and logps.grad.abs().sum() > 0
    assert old.grad is None and ref.grad is None and adv.grad is None
    c, r = _rand(B, seed=4).requires_grad_(True), _rand(B, seed=5).requires_grad_(True)
    rc, rr = _rand(B, seed=6).requires_grad_(True), _rand(B, seed=7).requires_grad_(True)
    mpo_loss(c, r, rc, rr, t([3.0, 3.0]))[0].backward()
    assert c.grad is not None and r.grad is not None
    assert rc.grad is None and rr.grad is None


def _token_losses(logps, old, ref, mask):
    adv = t([1.0, -1.0])
    return {
        "grpo": grpo_loss(logps, old, adv, mask, ref_logps=ref, kl_coef=0.1)[0],
        "dapo": grpo_loss(logps, old, adv, mask, 0.2, 0.28, ref, 0.1, token_level=True)[0],
        "gspo": gspo_loss(logps, old, adv, mask, 0.1, 0.1)[0],
        "sft": sft_loss(logps, mask)[0],
    }


@pytest.mark.parametrize("name", ["grpo", "dapo", "gspo", "sft"])
def test_masked_out_values_change_nothing(name):
    mask = t([[1, 1, 0, 0], [1, 1, 1, 0]])
    old, ref = _rand(2, 4, seed=1) - 1, _rand(2, 4, seed=2) - 1
    base = (old + _rand(2, 4, scale=0.3, seed=3)).requires_grad_(True)
    loss = _token_losses(base, old, ref, mask)[name]
    (grad,) = torch.autograd.grad(loss, base)
    off = mask == 0  # garbage in padded positions, -inf included: nothing may change

    def junk(x, v):
        return torch.where(off, torch.full_like(x, v), x)

    for lv, ov, rv in ((1e4, -1e4, 3e3), (-math.inf, -math.inf, -math.inf), (math.nan, 5.0, 0.0)):
        lp = junk(base.detach(), lv).requires_grad_(True)
        loss2 = _token_losses(lp, junk(old, ov), junk(ref, rv), mask)[name]
        (grad2,) = torch.autograd.grad(loss2, lp)
        assert loss2.item() == pytest.approx(loss.item(), rel=1e-12)
        assert torch.equal(grad2, grad) and grad2[off].abs().sum() == 0


def test_all_zero_masks_are_nan_free():
    logps = _rand(2, 3, seed=1).requires_grad_(True)
    old, ref = _rand(2, 3, seed=2), _rand(2, 3, seed=3)
    zero = torch.zeros(2, 3, dtype=D)
    partial = t([[1, 1, 0], [0, 0, 0]])  # second sequence is empty
    for mask in (zero, partial):
        for name, loss in _token_losses(logps, old, ref, mask).items():
            (grad,) = torch.autograd.grad(loss, logps)
            assert torch.isfinite(loss) and torch.isfinite(grad).all(), name
            if mask is zero:
                assert loss.item() == 0.0 and grad.abs().sum() == 0, name
    _, m = grpo_loss(logps, old, t([1.0, 1.0]), zero, ref_logps=ref)
    assert all(math.isfinite(v) for v in m.values())
    # an empty sequence adds 0 but still counts in the sequence-level batch mean
    one = grpo_loss(logps[:1], old[:1], t([1.0]), partial[:1])[0]
    both = grpo_loss(logps, old, t([1.0, 1.0]), partial)[0]
    assert both.item() == pytest.approx(one.item() / 2)


# ---------------------------------------------------------------- cross-check against TRL 1.16


class _Accel:
    """What TRL's loss code reads from `self.accelerator` on one process: identity gathers."""

    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _trl_dpo(loss_types, weights, beta, chosen_tok, rejected_tok, mask_c, mask_r, ref_c, ref_r):
    """Run TRL's real `DPOTrainer._compute_loss` (trl/trainer/dpo_trainer.py, `_compute_loss`,
    loss loop at `for loss_type, loss_weight in zip(self.loss_types, ...)`) on a stub trainer.

    The model is faked by what TRL's fused LM head returns (trl/trainer/utils.py,
    `add_fused_lm_head`): per-token log-probs [2B, T] for the shifted labels, 0 where the label
    is -100. Reference log-probs come precomputed in the batch (`precompute_ref_logps=True`).
    """
    from trl import DPOTrainer

    per_token = torch.cat([chosen_tok * mask_c, rejected_tok * mask_r])  # [2B, T], batch = [c; r]
    mask = torch.cat([mask_c, mask_r])  # [2B, T]
    completion_mask = F.pad(mask, (1, 0)).long()  # [2B, T + 1]: TRL scores labels shifted by one
    zeros = torch.zeros_like(per_token)
    outputs = SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros,
                              is_top1=zeros.bool(), aux_loss=None)
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accel(), aux_loss_enabled=False,
        ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=loss_types, loss_weights=weights, beta=beta, label_smoothing=0.0,
        use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros_like(completion_mask),
              "attention_mask": torch.ones_like(completion_mask),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_c,
              "ref_rejected_logps": ref_r}
    loss = DPOTrainer._compute_loss(stub, lambda **_: outputs, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in stub._metrics["train"].items()}


def _trl_grpo(loss_type, level, kl_coef, eps_low, eps_high, logps, old, ref, adv, mask):
    """Run TRL's real `GRPOTrainer._compute_loss` (trl/trainer/grpo_trainer.py, `_compute_loss`)
    on a stub trainer whose `_get_per_token_logps_and_entropies` returns our `logps`; eval mode,
    so no gradient-accumulation scaling. loss_type "grpo" = per sequence then batch, "bnpo" and
    "dapo" = over all tokens; importance_sampling_level "sequence" = GSPO.
    """
    from trl import GRPOTrainer

    B = logps.shape[0]
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=level, beta=kl_coef,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), loss_type=loss_type,
        epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
        vllm_importance_sampling_correction=False, model=SimpleNamespace(training=False),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False,
        aux_loss_enabled=False, accelerator=_Accel(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long),
              "prompt_mask": torch.ones(B, 1, dtype=torch.long),
              "completion_ids": torch.zeros_like(mask, dtype=torch.long),
              "completion_mask": mask, "advantages": adv, "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    loss = GRPOTrainer._compute_loss(stub, None, inputs)
    return loss, {k: v[-1] for k, v in stub._metrics["eval"].items()}


def _policy_batch(B=6, T=7, scale=0.3, seed=0):
    lengths = torch.tensor([7, 3, 5, 1, 6, 0])[:B]  # unequal, one empty sequence
    mask = (torch.arange(T) < lengths[:, None]).to(D)  # [B, T]
    old = _rand(B, T, seed=seed) - 2
    logps = (old + _rand(B, T, scale=scale, seed=seed + 1)).requires_grad_(True)
    ref = old + _rand(B, T, scale=0.2, seed=seed + 2)
    adv = _rand(B, seed=seed + 3)
    return logps, old, ref, adv, mask


def _grad(loss, x):
    return torch.autograd.grad(loss, x, retain_graph=True)[0]


@pytest.mark.slow  # importing trl takes ~5 s
@pytest.mark.parametrize(("trl_type", "token_level"),
                         [("grpo", False), ("bnpo", True), ("dapo", True)])
def test_grpo_matches_trl(trl_type, token_level):
    logps, old, ref, adv, mask = _policy_batch()
    ours, m = grpo_loss(logps, old, adv, mask, 0.2, 0.28, ref, 0.04, token_level)
    theirs, tm = _trl_grpo(trl_type, "token", 0.04, 0.2, 0.28, logps, old, ref, adv, mask)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    torch.testing.assert_close(_grad(ours, logps), _grad(theirs, logps), rtol=1e-10, atol=1e-12)
    assert 0 < m["clip_fraction"] < 1  # the batch really exercises clipping
    assert m["clip_fraction"] == pytest.approx(tm["clip_ratio/region_mean"], rel=1e-10)
    assert m["kl"] == pytest.approx(tm["kl"], rel=1e-10)


@pytest.mark.slow
def test_gspo_matches_trl_sequence_level():
    logps, old, ref, adv, mask = _policy_batch(scale=1e-3)
    ours, m = gspo_loss(logps, old, adv, mask)
    theirs, tm = _trl_grpo("grpo", "sequence", 0.0, 3e-4, 4e-4, logps, old, ref, adv, mask)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    torch.testing.assert_close(_grad(ours, logps), _grad(theirs, logps), rtol=1e-10, atol=1e-12)
    assert 0 < m["clip_fraction"] < 1  # TRL counts sequences in float32 here: rel 1e-6
    assert m["clip_fraction"] == pytest.approx(tm["clip_ratio/region_mean"], rel=1e-6)


def _pref_batch(equal_chosen_lengths=False, B=5, T=6):
    len_c = torch.full((B,), T) if equal_chosen_lengths else torch.tensor([6, 2, 4, 5, 1])
    mask_c = (torch.arange(T) < len_c[:, None]).to(D)
    mask_r = (torch.arange(T) < torch.tensor([3, 6, 1, 4, 5])[:, None]).to(D)
    c_tok = (-_rand(B, T, seed=10).abs()).requires_grad_(True)
    r_tok = (-_rand(B, T, seed=11).abs()).requires_grad_(True)
    ref_c = (c_tok.detach() * mask_c).sum(1) + _rand(B, seed=12)
    ref_r = (r_tok.detach() * mask_r).sum(1) + _rand(B, seed=13)
    return c_tok, r_tok, mask_c, mask_r, ref_c, ref_r


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["sigmoid", "bco_pair"])
def test_dpo_and_bco_pair_match_trl(loss_type):
    """TRL 1.16's "bco_pair" has no delta (it used a running mean before 1.0): compare delta=0."""
    c_tok, r_tok, mask_c, mask_r, ref_c, ref_r = _pref_batch()
    c, r = (c_tok * mask_c).sum(1), (r_tok * mask_r).sum(1)  # sequence log-prob sums [B]
    fn = dpo_loss if loss_type == "sigmoid" else bco_pair_loss
    ours, m = fn(c, r, ref_c, ref_r, beta=0.1)
    theirs, tm = _trl_dpo([loss_type], [1.0], 0.1, c_tok, r_tok, mask_c, mask_r, ref_c, ref_r)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    for x in (c_tok, r_tok):
        torch.testing.assert_close(_grad(ours, x), _grad(theirs, x), rtol=1e-10, atol=1e-12)
    assert m["reward_margin"] == pytest.approx(tm["rewards/margins"], rel=1e-10)
    assert m["accuracy"] == tm["rewards/accuracies"]
    assert m["reward_chosen"] == pytest.approx(tm["rewards/chosen"], rel=1e-10)


@pytest.mark.slow
def test_mpo_and_sft_match_trl():
    """TRL's MPO recipe is loss_type=["sigmoid", "bco_pair", "sft"], weights [0.8, 0.2, 1.0].
    Its "sft" term averages -logp over all chosen tokens of the batch, ours per chosen sequence
    (per-token NLL, batch mean): identical for equal chosen lengths, which is what we compare.
    With unequal lengths TRL's "sft" term equals our `sft_loss` (token level) instead."""
    mpo_trl = (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], 0.1)
    c_tok, r_tok, mask_c, mask_r, ref_c, ref_r = _pref_batch(equal_chosen_lengths=True)
    c, r = (c_tok * mask_c).sum(1), (r_tok * mask_r).sum(1)
    ours, _ = mpo_loss(c, r, ref_c, ref_r, mask_c.sum(1))
    theirs, _ = _trl_dpo(*mpo_trl, c_tok, r_tok, mask_c, mask_r, ref_c, ref_r)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
    for x in (c_tok, r_tok):
        torch.testing.assert_close(_grad(ours, x), _grad(theirs, x), rtol=1e-10, atol=1e-12)

    c_tok, r_tok, mask_c, mask_r, ref_c, ref_r = _pref_batch()  # unequal chosen lengths
    ours_sft, _ = sft_loss(c_tok, mask_c)
    theirs_sft, _ = _trl_dpo(["sft"], [1.0], 0.1, c_tok, r_tok, mask_c, mask_r, ref_c, ref_r)
    assert ours_sft.item() == pytest.approx(theirs_sft.item(), rel=1e-10)
    torch.testing.assert_close(_grad(ours_sft, c_tok), _grad(theirs_sft, c_tok))
    c, r = (c_tok * mask_c).sum(1), (r_tok * mask_r).sum(1)
    ours, _ = mpo_loss(c, r, ref_c, ref_r, mask_c.sum(1))
    theirs, _ = _trl_dpo(*mpo_trl, c_tok, r_tok, mask_c, mask_r, ref_c, ref_r)
    assert ours.item() != pytest.approx(theirs.item(), rel=1e-3)  # the documented difference


@pytest.mark.slow
def test_group_advantages_vs_trl():
    """TRL computes advantages inside `GRPOTrainer._generate_and_score_completions` (not callable
    without generation); its formula (trl/trainer/grpo_trainer.py, "advantages = rewards -
    mean_grouped_rewards", then "/ (std_rewards + 1e-4)" with `trl.trainer.utils.nanstd`) is
    reproduced here with TRL's own `nanstd`. Centering matches exactly; TRL's std is Bessel-
    corrected (unbiased) while ours is the population std, so they differ by sqrt(G / (G - 1))."""
    from trl.trainer.utils import nanstd

    G = 4
    rewards = _rand(12, seed=20)
    grouped = rewards.view(-1, G)
    trl_centred = rewards - grouped.mean(dim=1).repeat_interleave(G)
    trl_std = nanstd(grouped, dim=1).repeat_interleave(G)
    trl_adv = trl_centred / (trl_std + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, G, scale_by_std=False), trl_centred)
    ours = group_advantages(rewards, G, eps=1e-4)
    torch.testing.assert_close(ours, trl_centred / (trl_std * math.sqrt((G - 1) / G) + 1e-4))
    assert not torch.allclose(ours, trl_adv)

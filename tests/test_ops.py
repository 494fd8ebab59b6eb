"""Hand-computed checks of the tensor math in nplus/ops.py."""

import math

import pytest
import torch

from nplus import ops

T = torch.tensor


def test_masked_mean_var_whiten_by_hand():
    x = T([[1.0, 2.0, 3.0, 100.0]])
    m = T([[True, True, True, False]])
    assert ops.masked_mean(x, m).item() == pytest.approx(2.0)
    # unbiased variance of {1, 2, 3} = 1
    assert ops.masked_var(x, m).item() == pytest.approx(1.0)
    assert ops.masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    w = ops.masked_whiten(x, m)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-4)
    # shift_mean=False keeps the mean (sfd's reward whitening)
    w2 = ops.masked_whiten(x, m, shift_mean=False)
    assert w2[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-4)


def test_first_true_indices_and_truncate_after_eos():
    eos, pad = 9, 0
    r = T([[5, 9, 7, 9], [5, 6, 7, 8], [9, 1, 2, 3]])
    assert ops.first_true_indices(r == eos).tolist() == [1, 4, 0]
    assert ops.truncate_after_eos(r, eos, pad).tolist() == [[5, 9, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]]
    assert ops.response_lengths(ops.truncate_after_eos(r, eos, pad), eos).tolist() == [2, 4, 1]


def test_last_token_index_is_the_eos_and_pad_eq_eos_bug():
    pad = 0  # the EOS id 9 sits in the rows below
    ids = T([[3, 4, 9, 0, 0], [0, 0, 3, 4, 9]])  # right and left padded
    assert ops.last_token_index(ids, pad).tolist() == [2, 4]
    # pad = EOS: the EOS counts as pad and the index moves to the token before it
    assert ops.last_token_index(T([[3, 4, 9, 9, 9]]), pad_id=9).tolist() == [1]


def test_pool_reward_variants():
    scores = T([[1.0, 2.0, 3.0, 4.0]])
    ids = T([[5, 6, 7, 0]])
    assert ops.pool_reward(scores, ids, 0, "eos").item() == 3.0
    assert ops.pool_reward(scores, ids, 0, "last_position").item() == 4.0
    assert ops.pool_reward(scores, ids, 0, "mean").item() == pytest.approx(2.0)


def test_kl_estimators_by_hand():
    lp, ref = T([[math.log(0.5)]]), T([[math.log(0.25)]])
    lr = math.log(2.0)
    assert ops.kl_per_token(lp, ref, "k1").item() == pytest.approx(lr)
    assert ops.kl_per_token(lp, ref, "k2").item() == pytest.approx(lr**2 / 2)
    assert ops.kl_per_token(lp, ref, "k3").item() == pytest.approx((0.5 - 1) + lr)
    # k3 is non-negative even when log r < 0
    assert ops.kl_per_token(ref, lp, "k3").item() >= 0


def test_gae_small_example_by_hand():
    # one episode of 3 steps, gamma 1, lambda 0.5
    rewards = T([[0.0, 0.0, 1.0]])
    values = T([[0.5, 0.2, 0.4]])
    adv, ret = ops.gae(rewards, values, gamma=1.0, lam=0.5)
    d2 = 1.0 - 0.4  # terminal: next value 0
    d1 = 0.0 + 0.4 - 0.2
    d0 = 0.0 + 0.2 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])


def test_gae_gamma_discounts():
    adv, _ = ops.gae(T([[0.0, 1.0]]), T([[0.0, 0.0]]), gamma=0.5, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.5, 1.0])


def test_policy_loss_clipping_by_hand():
    old = T([[0.0, 0.0]])
    new = T([[math.log(1.5), math.log(0.5)]])
    adv = T([[1.0, -1.0]])
    m = T([[True, True]])
    loss, st = ops.policy_loss(new, old, adv, m, cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert st["clipfrac"].item() == pytest.approx(1.0)
    assert st["ratio"].item() == pytest.approx(1.0)


def test_value_loss_clipping_by_hand():
    new, old, ret = T([[1.0]]), T([[0.0]]), T([[1.0]])
    m = T([[True]])
    on, _ = ops.value_loss(new, old, ret, m, 0.2, "on")
    off, _ = ops.value_loss(new, old, ret, m, 0.2, "off")
    assert on.item() == pytest.approx(0.5 * (0.2 - 1.0) ** 2)  # max(0, 0.64)
    assert off.item() == pytest.approx(0.0)


def test_missing_eos_penalty_variants():
    s, has = T([2.0, 2.0]), T([True, False])
    assert ops.apply_missing_eos_penalty(s, has, -1.0, "replace").tolist() == [2.0, -1.0]
    assert ops.apply_missing_eos_penalty(s, has, -1.0, "subtract").tolist() == [2.0, 1.0]
    assert ops.apply_missing_eos_penalty(s, has, -1.0, "off").tolist() == [2.0, 2.0]


def test_score_placement_and_rewards():
    seq_last = T([1, 3])  # second response fills the window of 4
    assert ops.score_index(seq_last, 4, "eos_plus_one").tolist() == [2, 3]
    assert ops.score_index(seq_last, 4, "eos").tolist() == [1, 3]
    kl = torch.ones(2, 4)
    r = ops.per_token_rewards(kl, T([1.0, 2.0]), T([2, 3]), 0.1, "reward")
    assert r.flatten().tolist() == pytest.approx([-0.1, -0.1, 0.9, -0.1, -0.1, -0.1, -0.1, 1.9])
    r_loss = ops.per_token_rewards(kl, T([1.0, 2.0]), T([2, 3]), 0.1, "loss")
    assert r_loss.tolist() == [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 2.0]]


def test_reward_clipping_and_normalization():
    assert ops.clip_score(T([-7.0, 3.0, 12.0]), "5").tolist() == [-5.0, 3.0, 5.0]
    assert ops.clip_score(T([-7.0, 12.0]), "off").tolist() == [-7.0, 12.0]
    refs = T([1.0, 3.0])
    assert ops.reward_normalization_params("reference_bias", refs, None) == (2.0, 1.0)
    assert ops.reward_normalization_params("none", refs, None) == (0.0, 1.0)
    bias, gain = ops.reward_normalization_params("policy_gain_bias", refs, T([0.0, 2.0]))
    assert bias == 1.0 and gain == pytest.approx(1 / math.sqrt(2), rel=1e-4)
    assert ops.normalize_score(T([3.0]), 2.0, 1.0).item() == 1.0


def test_sft_loss_mask():
    m = T([[True, True, True, True, False]])
    q = T([2])
    assert ops.sft_loss_mask(m, q, "all").tolist() == [[True, True, True, True, False]]
    assert ops.sft_loss_mask(m, q, "response_only").tolist() == [[False, False, True, True, False]]


def test_lr_schedules_and_kl_controller():
    assert ops.lr_factor(0, 10, "linear") == 1.0 and ops.lr_factor(5, 10, "linear") == 0.5
    assert ops.lr_factor(5, 10, "cosine") == pytest.approx(0.5) and ops.lr_factor(10, 10, "cosine") == pytest.approx(
        0.0
    )
    assert ops.lr_factor(7, 10, "constant") == 1.0
    assert ops.next_kl_coef(0.05, 100.0, 512, "fixed", 6.0, 10000) == 0.05
    # KL far above target: error clipped at +0.2 → β · (1 + 0.2 · 512/10000)
    assert ops.next_kl_coef(0.05, 100.0, 512, "adaptive", 6.0, 10000) == pytest.approx(0.05 * (1 + 0.2 * 0.0512))


def test_whitening_switches():
    a = T([[1.0, 2.0, 3.0, 9.0]])
    m = T([[True, True, True, False]])
    assert ops.whiten_advantages(a, m, "off").tolist() == [[1.0, 2.0, 3.0, 0.0]]
    assert ops.whiten_advantages(a, m, "on")[0, :3].tolist() == pytest.approx([-1, 0, 1], abs=1e-4)
    assert ops.whiten_rewards(a, m, "off") is a
    assert ops.whiten_rewards(a, m, "on")[0, 3].item() == 0.0


def test_training_logits_temperature():
    logits = T([[[1.0, 2.0]]])
    assert torch.allclose(ops.training_logits(logits, 0.5, "on"), logits / 0.5, atol=1e-5)
    assert ops.training_logits(logits, 0.5, "off") is logits


def test_entropy_from_logits_by_hand_and_blockwise_bit_for_bit():
    # uniform over V: log V; one-hot-like: ~0; a 2-way 50/50 split: log 2
    V = 7
    logits = torch.stack(
        [torch.zeros(V), torch.tensor([50.0] + [0.0] * (V - 1)), torch.tensor([3.0, 3.0] + [-1e4] * (V - 2))]
    )[None]  # (1, 3, V)
    got = ops.entropy_from_logits(logits)
    assert got.shape == (1, 3)
    torch.testing.assert_close(got[0], torch.tensor([math.log(V), 0.0, math.log(2)]), atol=1e-5, rtol=0)
    # blocks of rows give the one-pass values bit for bit, also when the rows do not divide evenly
    x = torch.randn(5, 13, 31)[:, :-1]  # non-contiguous, as logits[:, :-1] is
    logp = torch.log_softmax(x.float(), dim=-1)
    one_pass = -(logp.exp() * logp).sum(-1)
    for rows in (1, 7, 64, 1000):
        assert torch.equal(ops.entropy_from_logits(x, rows), one_pass)

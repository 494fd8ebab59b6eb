"""Hand-computed checks of the DPO, RLOO, REINFORCE and GRPO math in nplus/objectives.py."""

import math

import pytest
import torch

from nplus import objectives, ops

T = torch.tensor


def test_dpo_sigmoid_loss_and_implicit_rewards_by_hand():
    # log-ratios: chosen −1 − (−1.5) = 0.5, rejected −2 − (−1.5) = −0.5 → margin h = 1
    loss, rc, rr = objectives.dpo_loss(T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5]), 0.5, "sigmoid")
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)))  # −log σ(β·h) = −log σ(0.5)
    assert rc.tolist() == pytest.approx([0.25]) and rr.tolist() == pytest.approx([-0.25])  # β·log-ratio
    # a batch averages; policy = reference gives log 2 whatever β
    loss2, _, _ = objectives.dpo_loss(
        T([-1.0, -3.0]), T([-2.0, -3.0]), T([-1.5, -3.0]), T([-1.5, -3.0]), 0.5, "sigmoid"
    )
    assert loss2.item() == pytest.approx((math.log(1 + math.exp(-0.5)) + math.log(2)) / 2)


def test_ipo_loss_by_hand():
    # (h − 1/(2β))²: h = 1, β = 0.25 → (1 − 2)² = 1; β = 0.5 → the target margin is reached, loss 0
    assert objectives.dpo_loss(T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5]), 0.25, "ipo")[0].item() == pytest.approx(1.0)
    assert objectives.dpo_loss(T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5]), 0.5, "ipo")[0].item() == pytest.approx(0.0)
    # policy = reference: h = 0 → 1/(4β²)
    assert objectives.dpo_loss(T([-1.0]), T([-1.0]), T([-1.0]), T([-1.0]), 0.5, "ipo")[0].item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        objectives.dpo_loss(T([0.0]), T([0.0]), T([0.0]), T([0.0]), 0.5, "hinge")


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    pc, pr = T([-1.0], requires_grad=True), T([-1.0], requires_grad=True)
    objectives.dpo_loss(pc, pr, T([-1.0]), T([-1.0]), 0.1, "sigmoid")[0].backward()
    # d/dh −log σ(βh) at h = 0 is −β/2: descent raises log π(chosen) and lowers log π(rejected)
    assert pc.grad.item() == pytest.approx(-0.05) and pr.grad.item() == pytest.approx(0.05)


def test_sequence_logprobs_sum_response_tokens_only():
    lp = T([[-1.0, -2.0, -5.0], [-0.5, -0.25, -9.0]])
    mask = T([[True, True, False], [True, True, True]])
    assert objectives.sequence_logprobs(lp, mask).tolist() == pytest.approx([-3.0, -9.75])


def test_sequence_rewards_kl_in_reward_or_loss():
    scores, kl = T([1.0, 2.0]), T([[0.1, 0.2, 0.0], [0.3, 0.0, 0.0]])
    assert objectives.sequence_rewards(scores, kl, 0.5, "reward").tolist() == pytest.approx([0.85, 1.85])
    assert objectives.sequence_rewards(scores, kl, 0.5, "loss").tolist() == pytest.approx([1.0, 2.0])


def test_leave_one_out_baseline_by_hand():
    # groups of 3: [1, 2, 3] → baselines 2.5, 2, 1.5; [10, 20, 30] → 25, 20, 15
    adv = objectives.leave_one_out_advantages(T([1.0, 2.0, 3.0, 10.0, 20.0, 30.0]), 3)
    assert adv.tolist() == pytest.approx([-1.5, 0.0, 1.5, -15.0, 0.0, 15.0])
    assert objectives.leave_one_out_advantages(T([1.0, 3.0]), 2).tolist() == pytest.approx([-2.0, 2.0])
    # identity: R_i − mean of the others = k/(k−1)·(R_i − group mean)
    r = torch.randn(12)
    centred = (r.view(-1, 4) - r.view(-1, 4).mean(1, keepdim=True)).reshape(-1)
    assert objectives.leave_one_out_advantages(r, 4).tolist() == pytest.approx((centred * 4 / 3).tolist(), abs=1e-6)


def test_group_normalization_by_hand():
    r = T([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    # group [1, 2, 3]: mean 2, Bessel std 1 → [−1, 0, 1]/(1 + 1e-4); a group of equal rewards → 0, not 0/0
    on = objectives.group_advantages(r, 3, "on")
    assert on.tolist() == pytest.approx([-1 / 1.0001, 0.0, 1 / 1.0001, 0.0, 0.0, 0.0])
    # Dr. GRPO: mean-centred only, so the scale of the rewards is kept
    assert objectives.group_advantages(10 * r, 3, "off").tolist() == pytest.approx([-10.0, 0.0, 10.0, 0.0, 0.0, 0.0])


def test_reinforce_baselines_by_hand():
    b, mean, n = objectives.reinforce_baseline(T([1.0, 3.0]), "moving_average", 0.0, 0)
    assert b.tolist() == [0.0, 0.0] and (mean, n) == (2.0, 2)  # nothing seen before the first batch
    b, mean, n = objectives.reinforce_baseline(T([5.0, 7.0]), "moving_average", mean, n)
    assert b.tolist() == [2.0, 2.0] and (mean, n) == (4.0, 4)  # the running mean of the earlier rewards
    assert objectives.reinforce_baseline(T([5.0, 7.0]), "batch_mean", 2.0, 2)[0].tolist() == [6.0, 6.0]
    assert objectives.reinforce_baseline(T([5.0, 7.0]), "none", 2.0, 2)[0].tolist() == [0.0, 0.0]


def test_loss_averaging_by_hand():
    loss = T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = T([[True, True, True], [True, False, False]])
    assert objectives.aggregate_token_loss(loss, mask, "per_sequence").item() == pytest.approx(3.0)  # (2 + 4) / 2
    assert objectives.aggregate_token_loss(loss, mask, "per_token").item() == pytest.approx(2.5)  # 10 / 4 tokens
    assert objectives.aggregate_token_loss(loss, mask, "max_length").item() == pytest.approx(10 / 6)  # 10 / (2 × 3)


def test_vanilla_reinforce_loss_and_gradient_by_hand():
    new = T([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    adv = T([[2.0, 2.0], [-1.0, -1.0]])
    mask = T([[True, True], [True, False]])
    loss, stats = objectives.policy_gradient_loss("vanilla", new, new.detach(), adv, mask, 0.2)
    # −mean_i A_i·Σ_t log π: −(2·(−3) + (−1)·(−0.5)) / 2 = 2.75
    assert loss.item() == pytest.approx(2.75)
    assert stats["ratio"].item() == pytest.approx(1.0)
    loss.backward()
    assert new.grad.flatten().tolist() == pytest.approx([-1.0, -1.0, 0.5, 0.0])  # −A_i / B at real tokens, 0 at the pad
    # clipped: PPO's surrogate averaged over the 3 real tokens, −(2 + 2 − 1) / 3 at ratio 1
    clipped, _ = objectives.policy_gradient_loss("clipped", new.detach(), new.detach(), adv, mask, 0.2)
    assert clipped.item() == pytest.approx(-1.0)


def test_clipped_surrogate_is_the_unreduced_ppo_loss():
    new, old = T([[-1.0, -0.2, -3.0]]), T([[-1.5, -0.1, -3.0]])
    adv, mask = T([[1.0, -2.0, 0.5]]), T([[True, True, False]])
    token_losses, stats = ops.clipped_surrogate(new, old, adv, mask, 0.2)
    # ratio e^0.5 ≈ 1.65 clipped to 1.2 for A = 1 → −1.2; ratio e^−0.1 ≈ 0.905 in range for A = −2 → 1.81
    assert token_losses[0, :2].tolist() == pytest.approx([-1.2, 2 * math.exp(-0.1)], abs=1e-6)
    loss, stats2 = ops.policy_loss(new, old, adv, mask, 0.2)
    assert loss.item() == pytest.approx(ops.masked_mean(token_losses, mask).item())
    assert stats["clipfrac"].item() == pytest.approx(0.5) and stats2["clipfrac"].item() == pytest.approx(0.5)


def test_grpo_k3_is_schulmans_estimator_with_ratio_ref_over_policy():
    # π = 0.5, π_ref = 0.25: k3 = π_ref/π − 1 − log(π_ref/π) = 0.5 − 1 + log 2
    k3 = ops.kl_per_token(T([math.log(0.5)]), T([math.log(0.25)]), "k3")
    assert k3.item() == pytest.approx(-0.5 + math.log(2))

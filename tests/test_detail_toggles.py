"""No dead flags: for every detail, each of its values gives a different output of the function that owns it.

OWNERS maps each detail to a function value → output of its owner on a fixed input. A test fails if a detail has
no owner here, or if two of its values produce the same output.
"""

import pytest
import torch
from transformers import GPTNeoXForCausalLM

from nplus import objectives, ops
from nplus.config import apply_overrides
from nplus.data.formatting import pad, preference_response_ids, prepare_tokenizer, sft_response_ids
from nplus.data.truncation import truncate_query
from nplus.details import REGISTRY
from nplus.models import ScalarModel, init_critic, init_reward_head, ladder_config, set_dropout
from nplus.presets import preset
from nplus.stages.common import sample
from nplus.tasks.tokenizer import train_tokenizer

T = torch.tensor


@pytest.fixture(scope="module")
def tok():
    texts = [
        "I (24F) found out my boyfriend (26M) cheated on me.\nShould I break up?",
        "TL;DR: feeling hurt",
        "SUBREDDIT: r/x TITLE: POST:",
    ] * 20
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tok):
    """A tiny SFT policy and reward model saved like the pipeline's artifacts."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    lm = GPTNeoXForCausalLM(ladder_config("nano", len(tok), 128, tok.eos_token_id, tok.pad_token_id))
    lm.save_pretrained(root / "sft", safe_serialization=True)
    rm = ScalarModel(GPTNeoXForCausalLM.from_pretrained(root / "sft").base_model, init_reward_head(32, "scaled_normal"))
    with torch.no_grad():  # RM training moves the trunk away from SFT's; mimic that
        rm.head.bias.fill_(0.7)
        for p in rm.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rm.save(root / "rm")
    return root


def _ppo_rollout(models, tok, **details):
    from nplus.rewards import rm_score_fn
    from nplus.stages.online import rollout
    from nplus.stages.ppo import advantages_and_returns, build_actor

    cfg = apply_overrides(preset("smoke", 1), details=details)
    actor = build_actor(cfg, models / "sft", models / "rm")
    ref = GPTNeoXForCausalLM.from_pretrained(models / "sft").eval()
    rm = ScalarModel.load(models / "rm").eval()
    q = torch.full((4, 6), tok.pad_token_id)
    q[:, 2:] = torch.tensor(tok("I found out my")["input_ids"][:4])
    g = torch.Generator().manual_seed(0)
    score = rm_score_fn(rm, 0.1, 1.0, tok.pad_token_id, cfg.details.reward_token)
    ro = rollout(cfg, actor, ref, score, q, [""] * q.size(0), tok.pad_token_id, tok.eos_token_id, g)
    return ro, advantages_and_returns(cfg, ro, 0.05)


def _kl_details(**details):
    """The KL estimator and placement a critic-free algorithm reads under these details."""
    from nplus.stages.critic_free import kl_details

    algorithm = "grpo" if any(k.startswith("grpo_") for k in details) else "rloo"
    return kl_details(apply_overrides(preset("smoke", 1), hparams={"algorithm": algorithm}, details=details))


def _synced_reference(models, mode):
    """The reference after DPO's 4th step when the policy has moved away from it (sync every 2 steps)."""
    from nplus.stages.dpo import update_reference

    ref, policy = (GPTNeoXForCausalLM.from_pretrained(models / "sft") for _ in range(2))
    with torch.no_grad():
        for q in policy.parameters():
            q.add_(1.0)
    update_reference(mode, ref, policy, 4, 2, 0.6)
    return round(sum(float(r.sum()) for r in ref.parameters()), 3)


def _small_vocab_lm():
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(ladder_config("nano", 8, 64, 0, 1)).eval()


LONG_POST = ("word " * 60 + "\n") * 3


def owners(tok, models):
    x = T([[1.0, 2.0, 3.0, 4.0]])
    m = T([[True, True, True, False]])
    return {
        "query_truncation": lambda v: truncate_query("x", "t", LONG_POST, tok, 64, v),
        "query_padding_side": lambda v: pad([5, 6], 4, 0, v),
        "pad_token": lambda v: prepare_tokenizer(tok, v).pad_token_id,
        "reference_leading_space": lambda v: sft_response_ids("feeling hurt", tok, v, "on"),
        "reference_eos": lambda v: sft_response_ids("feeling hurt", tok, "on", v),
        "preference_eos": lambda v: preference_response_ids(" feeling hurt", tok, v),
        "dropout": lambda v: tuple(
            mod.p
            for mod in set_dropout(GPTNeoXForCausalLM(ladder_config("nano", 50, 16, 0, 1)), v).modules()
            if isinstance(mod, torch.nn.Dropout)
        ),
        "learning_rate": lambda v: apply_overrides(preset("demo"), details={"learning_rate": v}).stage_lr("sft", 64),
        "adam_eps": ops.adam_eps,
        "sft_loss_tokens": lambda v: ops.sft_loss_mask(m, T([1]), v).tolist(),
        "reward_head_init": lambda v: init_reward_head(8, v, torch.Generator().manual_seed(0)).bias.item(),
        "reward_token": lambda v: ops.pool_reward(x, T([[5, 6, 7, 0]]), 0, v).item(),
        "reward_normalization": lambda v: ops.reward_normalization_params(v, T([1.0, 3.0]), T([0.0, 4.0])),
        "value_init": lambda v: init_critic(v, models / "rm", models / "sft")(T([[3, 4, 5]]), 1).detach().sum().item(),
        "value_network": lambda v: _ppo_rollout(models, tok, value_network=v)[0].values.sum().item(),
        # an 8-token vocabulary (eos 0, pad 1) so that EOS is sampled early in most rows
        "response_sampling": lambda v: sample(
            _small_vocab_lm(), T([[1, 3, 4, 5]] * 8), 1, 0, 24, 1.0, v, torch.Generator().manual_seed(0)
        ).responses.tolist(),
        "missing_eos_penalty": lambda v: ops.apply_missing_eos_penalty(T([2.0]), T([False]), -1.0, v).item(),
        "temperature_in_training": lambda v: ops.training_logits(x, 0.7, v).tolist(),
        # with temperature_in_training off, generation log-probs (at T) and a recomputation (at 1) differ
        "rollout_logprobs": lambda v: (
            _ppo_rollout(models, tok, rollout_logprobs=v, temperature_in_training="off")[0].logprobs.sum().item()
        ),
        "kl_estimator": lambda v: ops.kl_per_token(T([-0.5]), T([-1.5]), v).item(),
        "kl_placement": lambda v: ops.per_token_rewards(torch.ones(1, 3), T([1.0]), T([2]), 0.1, v).tolist(),
        "kl_controller": lambda v: ops.next_kl_coef(0.05, 20.0, 64, v, 6.0, 1000),
        "reward_clipping": lambda v: ops.clip_score(T([12.0]), v).item(),
        "reward_whitening": lambda v: ops.whiten_rewards(x, m, v).tolist(),
        "advantage_whitening": lambda v: ops.whiten_advantages(x, m, v).tolist(),
        "value_clipping": lambda v: ops.value_loss(T([[1.0]]), T([[0.0]]), T([[1.0]]), T([[True]]), 0.2, v)[0].item(),
        "score_position": lambda v: ops.score_index(T([1]), 4, v).tolist(),
        "lr_schedule": lambda v: ops.lr_factor(3, 10, v),
        "eval_temperature": lambda v: (
            apply_overrides(preset("demo"), details={"eval_temperature": v}).sampling_eval_temperature
        ),
        "dpo_loss": lambda v: objectives.dpo_loss(T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5]), 0.25, v)[0].item(),
        "dpo_reference": lambda v: _synced_reference(models, v),
        # old log-probs differ from the new ones, so the clipped ratio differs from the REINFORCE estimator
        "pg_update": lambda v: objectives.policy_gradient_loss(
            v, T([[-1.0, -2.0]]), T([[-1.5, -2.0]]), T([[1.0, 1.0]]), T([[True, True]]), 0.2
        )[0].item(),
        "reinforce_baseline": lambda v: objectives.reinforce_baseline(T([5.0, 7.0]), v, 2.0, 2)[0].tolist(),
        "grpo_std_normalization": lambda v: objectives.group_advantages(T([1.0, 5.0]), 2, v).tolist(),
        "grpo_kl_estimator": lambda v: ops.kl_per_token(
            T([-0.5]), T([-1.5]), _kl_details(grpo_kl_estimator=v)[0]
        ).item(),
        "grpo_kl_placement": lambda v: objectives.sequence_rewards(
            T([1.0]), T([[0.5]]), 0.1, _kl_details(grpo_kl_placement=v)[1]
        ).item(),
        "grpo_loss_averaging": lambda v: objectives.aggregate_token_loss(
            T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]), T([[True, True, True], [True, False, False]]), v
        ).item(),
    }


def test_every_detail_has_an_owner(tok, models):
    assert set(owners(tok, models)) == set(REGISTRY)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_flipping_detail_changes_owner_output(name, tok, models):
    fn = owners(tok, models)[name]
    outputs = [repr(fn(value)) for value in REGISTRY[name].choices]
    assert len(set(outputs)) == len(outputs), f"{name}: values {REGISTRY[name].choices} gave {outputs}"

"""A clean run prints only nplus's own lines: loading the RM's and the critic's trunk from the SFT checkpoint and
sampling with a KV cache print no transformers LOAD REPORT table and no FutureWarning (issue 36), and the trunk
loaded the quiet way is the same weights as before, with no random draw."""

from __future__ import annotations

import warnings

import torch
from transformers import AutoModel, GPTNeoXConfig, GPTNeoXForCausalLM

from nplus.models import init_critic, load_trunk
from nplus.stages.common import sample


def _saved_lm(tmp_path):
    config = GPTNeoXConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    lm = GPTNeoXForCausalLM(config)
    lm.save_pretrained(tmp_path / "sft", safe_serialization=True)
    return tmp_path / "sft"


def test_trunk_and_sampling_print_no_library_noise(tmp_path, capfd):
    sft = _saved_lm(tmp_path)
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a FutureWarning fails the test whatever the filters say
        trunk = load_trunk(sft)
        critic = init_critic("sft", tmp_path / "no_rm", sft)
        lm = GPTNeoXForCausalLM.from_pretrained(str(sft), use_safetensors=True)
        queries = torch.tensor([[0, 5, 6, 7], [3, 4, 5, 6]])
        out = sample(
            lm,
            queries,
            pad_id=0,
            eos_id=1,
            length=5,
            temperature=1.0,
            response_sampling="fixed_length_then_truncate",
            generator=torch.Generator().manual_seed(1),
        )
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "UNEXPECTED" not in err, err
    assert "FutureWarning" not in err and "deprecated" not in err, err
    assert out.responses.shape == (2, 5) and critic.backbone.config.hidden_size == trunk.config.hidden_size


def test_quiet_trunk_is_the_same_weights_and_draws_nothing(tmp_path):
    sft = _saved_lm(tmp_path)
    torch.manual_seed(5)
    old = AutoModel.from_pretrained(str(sft), use_safetensors=True)  # the loud way it was loaded before
    after_old = torch.rand(3)
    torch.manual_seed(5)
    new = load_trunk(sft)
    assert torch.equal(torch.rand(3), after_old)
    assert type(new) is type(old) and old.state_dict().keys() == new.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))

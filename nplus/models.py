"""Models: the GPT-NeoX (Pythia-architecture) ladder, base pretraining, scalar reward/value models.

Any ``transformers`` causal LM works through the same functions; the ladder only exists for the embedded task.
Weights are saved and loaded with safetensors only (``save_pretrained(safe_serialization)`` and
``safetensors.torch``), never by unpickling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXModel, PreTrainedModel
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb, eager_attention_forward
from transformers.utils import logging as hf_logging

from nplus import ops
from nplus.rundir import fault_point

hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load drowns nplus's own progress

# Rungs of the ladder: (hidden, layers, heads). FFN = 4 × hidden, parallel residual and untied embeddings, as in
# Pythia; rotary on 25 % of head dims as in Pythia unless ModelConfig.rotary_pct says otherwise. Parameter counts
# depend on the tokenizer's vocabulary.
LADDER: dict[str, tuple[int, int, int]] = {
    "nano": (32, 1, 2),
    "nano2": (32, 2, 2),
    "micro": (48, 2, 4),
    "tiny": (64, 2, 4),
    "mini": (80, 2, 4),
    # Depth grows with width in Pythia's ladder: this 4-layer rung's reward model read the post's facts best of the
    # ladder's at 48,000 comparisons (docs/tldr-synth.md, "Reward-model data"). 64 × 4 did not pass the copy bar.
    "micro4": (48, 4, 4),
    # The scaling ladder (preset `scaling`, ablations/scaling.toml): depth grows with width as in Pythia's, the
    # pretraining rates fall as 1 / width (ModelConfig.pretrain_lr_rule), the same tokens in the same order.
    "r32x2": (32, 2, 2),
    "r48x3": (48, 3, 4),
    "r64x4": (64, 4, 4),
    "r96x4": (96, 4, 4),
    "r128x4": (128, 4, 4),
    "xs": (128, 3, 4),
    "s": (192, 4, 6),
    "m": (256, 6, 8),
    "l": (384, 6, 6),
}
# Pythia's base configs have no dropout; GPT-2's have 0.1. The ladder keeps 0.1 so that details.dropout matters.
BASE_DROPOUT = 0.1
LADDER_DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "classifier_dropout")


def ladder_config(
    rung: str, vocab_size: int, max_positions: int, eos_id: int, pad_id: int, rotary_pct: float = 0.25
) -> GPTNeoXConfig:
    hidden, layers, heads = LADDER[rung]
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_positions,
        **dict.fromkeys(LADDER_DROPOUT_KEYS, BASE_DROPOUT),
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
        use_parallel_residual=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": rotary_pct},
    )


def is_ladder(name: str) -> bool:
    return name in LADDER


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_dropout(model: nn.Module, mode: str) -> nn.Module:
    """details.dropout: ``disabled`` zeroes every dropout probability (paper); ``model_default`` keeps them.

    Covers nn.Dropout modules and attention modules that read a float ``attention_dropout`` at call time.
    """
    if mode == "model_default":
        return model
    if mode != "disabled":
        raise ValueError(f"dropout={mode!r}")
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    config = getattr(model, "config", None)
    for key in (
        "attention_dropout",
        "hidden_dropout",
        "classifier_dropout",
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "dropout",
    ):
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)
    return model


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) attention mask → (B, L) positions counting only attended tokens (left padding starts at 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def lm_logits(
    model: PreTrainedModel, input_ids: torch.Tensor, pad_id: int, keep: int = 0, suffix: bool = False
) -> torch.Tensor:
    """(B, L) ids → (B, L, V) logits, masking pads (``ids != pad_id``, as sfd does) with matching positions.

    ``keep > 0`` computes logits for the last ``keep`` positions only, (B, keep, V): PPO needs them for the
    response alone, and the vocabulary projection over the query is most of a small model's cost. With
    ``suffix`` (ppo.last_layer = response) the last layer also runs on those positions alone (``suffix_hidden``).
    """
    if keep > 0 and suffix and suffix_supported(model.base_model):
        return model.get_output_embeddings()(suffix_hidden(model.base_model, input_ids, pad_id, keep))
    mask = input_ids != pad_id
    return model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
        logits_to_keep=keep,
    ).logits


def suffix_supported(trunk: nn.Module) -> bool:
    """Whether ``suffix_hidden`` has a last-layer-on-the-suffix path for this trunk (else it runs the full forward)."""
    return isinstance(trunk, GPTNeoXModel) and trunk.config._attn_implementation in ("sdpa", "eager")


def suffix_hidden(trunk: PreTrainedModel, input_ids: torch.Tensor, pad_id: int, keep: int) -> torch.Tensor:
    """(B, L) ids → (B, keep, H): the trunk's final hidden states (after its final norm) at the last ``keep`` positions.

    A position's last-layer output feeds only its own logit or value, and PPO reads the response's alone. So the
    last layer runs its attention queries, output projection, MLP and final norm on the last ``keep`` positions
    only; its keys and values still cover every position, and the layers below run in full (their outputs are the
    last layer's keys and values). The same function of the weights as ``trunk(...).last_hidden_state[:, -keep:]``
    (the last layer's dropout, when on, draws masks for the kept positions only). At the demo's shapes it is
    bit-identical and takes 27 % off a policy + critic forward and backward (docs/performance.md). Other trunks
    than GPT-NeoX with sdpa or eager attention get the full forward, sliced.
    """
    mask = input_ids != pad_id
    positions = position_ids_from_mask(mask)
    if not suffix_supported(trunk):
        return trunk(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state[:, -keep:]
    # 1. embeddings, mask and rotary tables, and every layer but the last: as GPTNeoXModel.forward
    embeds = trunk.embed_in(input_ids)  # (B, L, H)
    # (B, 1, L, L), or None without padding (is_causal); the cache argument (None) is positional: its name changed
    causal = create_causal_mask(trunk.config, embeds, mask, None, positions)
    hidden = trunk.emb_dropout(embeds)
    cos, sin = trunk.rotary_emb(hidden, position_ids=positions)  # (B, L, rotary dims) each
    for layer in trunk.layers[:-1]:
        hidden = layer(hidden, attention_mask=causal, position_ids=positions, position_embeddings=(cos, sin))
    # 2. the last layer: keys and values of all L positions, queries of the last `keep`
    layer, attn = trunk.layers[-1], trunk.layers[-1].attention
    B, L, H = hidden.shape
    qkv = attn.query_key_value(layer.input_layernorm(hidden)).view(B, L, -1, 3 * attn.head_size).transpose(1, 2)
    query, key, value = qkv.chunk(3, dim=-1)  # (B, heads, L, head) each
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    query = query[:, :, -keep:]  # (B, heads, keep, head)
    if causal is None:  # a shorter query block needs the explicit mask: sdpa's is_causal aligns it top-left
        causal = torch.ones(L, L, dtype=torch.bool, device=hidden.device).tril()[None, None]
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(trunk.config._attn_implementation, eager_attention_forward)
    out, _ = attend(
        attn,
        query,
        key,
        value,
        causal[:, :, -keep:],
        scaling=attn.scaling,
        dropout=attn.attention_dropout if attn.training else 0.0,
    )  # (B, keep, heads, head)
    out = layer.post_attention_dropout(attn.dense(out.reshape(B, keep, H)))
    # 3. the residual branches of the kept positions (Pythia: parallel residual)
    kept = hidden[:, -keep:]
    if layer.use_parallel_residual:
        hidden = layer.post_mlp_dropout(layer.mlp(layer.post_attention_layernorm(kept))) + out + kept
    else:
        out = out + kept
        hidden = layer.post_mlp_dropout(layer.mlp(layer.post_attention_layernorm(out))) + out
    return trunk.final_layer_norm(hidden)


def by_length(fn, input_ids: torch.Tensor, pad_id: int, chunks: int):
    """``fn(ids)`` over rows grouped by length: the same outputs as ``fn(input_ids)`` up to float rounding.

    Left-padded rows are sorted by their leading pad count and split into ``chunks`` groups; each group drops the
    leading columns that are padding in all its rows, runs ``fn``, and the outputs go back to the input's row
    order. Exact because a leading pad is masked out of attention and position ids count attended tokens only
    (``position_ids_from_mask``), so the columns dropped never touch a kept token. The point is compute: at the
    demo's shapes 4 groups took 26 % off a policy + critic forward and backward and 16 % off a PPO update
    (docs/performance.md). ``fn`` must return a tensor or a tuple of tensors of shape (rows, ...) that does not
    depend on the number of columns (e.g. the last ``keep`` positions); ``chunks = 1`` is the plain call.
    """
    if chunks <= 1 or input_ids.size(0) <= 1:
        return fn(input_ids)
    lead = ops.first_true_indices(input_ids != pad_id)  # (B,) leading pads per row
    order = lead.argsort(descending=True, stable=True)  # shortest rows first
    last = input_ids.size(1) - 1  # an all-pad row (none in practice) keeps one column
    outs = [fn(input_ids[rows, min(int(lead[rows].min()), last) :]) for rows in order.chunk(chunks)]
    back = order.argsort()
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts)[back] for parts in zip(*outs))
    return torch.cat(outs)[back]


def load_causal_lm(path_or_name: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(str(path_or_name), dtype=dtype, use_safetensors=True)


def resize_for_tokenizer(model: PreTrainedModel, vocab_size: int) -> None:
    """Grow the embeddings when the tokenizer gained tokens (e.g. Pythia + [PAD])."""
    if model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size)


class ScalarModel(nn.Module):
    """A transformer trunk with a linear head d_model → 1 applied at every position (reward model and critic)."""

    def __init__(self, backbone: PreTrainedModel, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Linear(backbone.config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, pad_id: int, keep: int = 0, suffix: bool = False) -> torch.Tensor:
        """(B, L) ids → (B, L) scalar outputs; ``keep > 0``: those of the last ``keep`` positions, (B, keep), with
        ``suffix`` (``suffix_hidden``) computed for those alone, else sliced from the full output (bit for bit)."""
        if keep > 0 and suffix:
            return self.head(suffix_hidden(self.backbone, input_ids, pad_id, keep)).squeeze(-1)
        mask = input_ids != pad_id
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
        ).last_hidden_state
        return self.head(hidden).squeeze(-1)[:, -keep:]

    def save(self, path: Path) -> None:
        path = Path(path)
        self.backbone.save_pretrained(path / "backbone", safe_serialization=True)
        fault_point("checkpoint")  # the kill -9 campaign dies here: trunk written, head not
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(path / "head.safetensors"))

    @classmethod
    def load(cls, path: Path, dtype: torch.dtype = torch.float32) -> "ScalarModel":
        path = Path(path)
        backbone = AutoModel.from_pretrained(str(path / "backbone"), dtype=dtype, use_safetensors=True)
        head = nn.Linear(backbone.config.hidden_size, 1)
        head.load_state_dict(load_file(str(path / "head.safetensors")))
        return cls(backbone, head.to(dtype))


def load_trunk(sft_dir: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The transformer trunk of a saved causal LM (the RM's and the critic's starting point).

    Loaded as the causal LM it was saved as and cut to its trunk: ``AutoModel.from_pretrained`` on that checkpoint
    gives the same weights but finds the LM head (``embed_out.weight``) unexpected and prints transformers' LOAD
    REPORT table on every run. Same weights, no random draw (tests/test_models_load.py)."""
    return trunk_of(load_causal_lm(sft_dir, dtype))


def trunk_of(lm: PreTrainedModel) -> PreTrainedModel:
    """The transformer trunk of a causal LM (GPT-NeoX: ``.gpt_neox``), sharing its weights."""
    return lm.base_model


def init_reward_head(hidden_size: int, mode: str, generator: torch.Generator | None = None) -> nn.Linear:
    """details.reward_head_init: weight ~ N(0, 1/sqrt(d+1)), bias 0 (paper, lmhp) or nn.Linear's default."""
    head = nn.Linear(hidden_size, 1)
    if mode == "scaled_normal":
        with torch.no_grad():
            head.weight.normal_(0.0, 1.0 / math.sqrt(hidden_size + 1), generator=generator)
            head.bias.zero_()
    elif mode != "default":
        raise ValueError(f"reward_head_init={mode!r}")
    return head


def init_critic(
    value_init: str, reward_model_dir: Path, sft_dir: Path, dtype: torch.dtype = torch.float32
) -> ScalarModel:
    """details.value_init: the critic starts as the reward model (paper), as SFT + a fresh scaled-normal head,
    or as SFT + a zero head (``random_head``: a value of 0 everywhere, no reward knowledge)."""
    if value_init == "reward_model":
        return ScalarModel.load(reward_model_dir, dtype)
    backbone = load_trunk(sft_dir, dtype)
    if value_init == "sft":
        return ScalarModel(backbone, init_reward_head(backbone.config.hidden_size, "scaled_normal"))
    if value_init == "random_head":
        head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return ScalarModel(backbone, head)
    raise ValueError(f"value_init={value_init!r}")


class SharedTrunkPolicy(nn.Module):
    """details.value_network = shared_trunk: one trunk, an LM head and a value head (trlx / lmhp style)."""

    def __init__(self, lm: PreTrainedModel, value_head: nn.Linear):
        super().__init__()
        self.lm = lm
        self.value_head = value_head

    def forward(
        self, input_ids: torch.Tensor, pad_id: int, keep: int = 0, suffix: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids → (B, L, V) logits and (B, L) values; ``keep > 0``: logits of the last ``keep`` positions
        only, and with ``suffix`` (``suffix_hidden``) the values too."""
        if keep > 0 and suffix:
            hidden = suffix_hidden(self.lm.base_model, input_ids, pad_id, keep)
            return self.lm.get_output_embeddings()(hidden), self.value_head(hidden).squeeze(-1)
        mask = input_ids != pad_id
        out = self.lm(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=keep,
        )
        return out.logits, self.value_head(out.hidden_states[-1]).squeeze(-1)


@dataclass(frozen=True)
class RewardNormalization:
    """Stored with the reward model: normalized score = gain · (score − bias). Also written to rm eval.json."""

    bias: float = 0.0
    gain: float = 1.0

    def apply(self, score: torch.Tensor) -> torch.Tensor:
        return ops.normalize_score(score, self.bias, self.gain)

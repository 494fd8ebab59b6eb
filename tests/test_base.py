"""The base-model stage: its pretraining corpus and the in-context copying probe recorded with it."""

import math

import torch
from transformers import GPTNeoXForCausalLM

from nplus.evaluation.probes import copy_probe
from nplus.models import ladder_config
from nplus.stages.base import pretraining_texts, token_stream, weighted_lm_loss


class _Tok:
    """Whitespace tokenizer with the interface token_stream uses."""

    eos_token_id = 0

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[self.vocab.setdefault(w, len(self.vocab) + 2) for w in t.split()] for t in texts]}


ROWS = [{"subreddit": "tifu", "title": "TIFU by forgetting", "post": "I forgot it.", "summary": "I forgot my keys"}]


def test_posts_tldr_corpus_appends_the_summary_and_posts_does_not():
    tok = _Tok()
    posts, starts, _ = token_stream(pretraining_texts(ROWS, "posts"), tok)
    with_tldr, _, tldr = token_stream(pretraining_texts(ROWS, "posts_tldr"), tok)
    keys = tok.vocab["keys"]
    assert keys not in posts.tolist() and keys in with_tldr.tolist()
    assert with_tldr.numel() == posts.numel() + 4 and with_tldr[-1] == 0 and posts[-1] == 0  # ends with EOS
    assert starts.tolist() == [0]
    # the mask marks the TL;DR line and the closing EOS, nothing of the query
    assert tldr.tolist() == [False] * (posts.numel() - 1) + [True] * 5


def test_weighted_lm_loss_is_the_mean_at_weight_one_and_counts_heavy_targets_more():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(2, 5, 7, generator=g), torch.randint(0, 7, (2, 5), generator=g)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), reduction="none").reshape(2, 5)
    assert torch.allclose(weighted_lm_loss(logits, targets, torch.ones(2, 5)), nll.mean())
    assert torch.equal(
        weighted_lm_loss(logits, targets), torch.nn.functional.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
    )
    w = torch.ones(2, 5)
    w[:, -2:] = 4.0
    assert torch.allclose(
        weighted_lm_loss(logits, targets, w), (nll[:, :3].sum() + 4 * nll[:, -2:].sum()) / 22
    )  # 2·3 + 4·2·2


class _Copier(torch.nn.Module):
    """Predicts token t+1 from position t − L + 1 once a sequence repeats (a perfect induction head)."""

    def __init__(self, vocab, length):
        super().__init__()
        self.vocab, self.length = vocab, length

    def forward(self, input_ids, use_cache=False):
        B, S = input_ids.shape
        logits = torch.zeros(B, S, self.vocab)
        for t in range(self.length - 1, S - 1):
            logits[torch.arange(B), t, input_ids[:, t - self.length + 1]] = 50.0
        return type("Out", (), {"logits": logits})()


def test_copy_probe_separates_a_copier_from_a_fresh_model():
    V, L = 64, 12
    fresh = GPTNeoXForCausalLM(ladder_config("nano", V, 64, 0, 1)).eval()
    r = copy_probe(fresh, V, n=8, length=L)
    assert abs(r["copy_gain"]) < 0.3 and abs(r["copy_nll_first"] - math.log(V)) < 0.5
    c = copy_probe(_Copier(V, L), V, n=8, length=L)
    assert c["copy_nll_repeat"] < 1e-3 and c["copy_gain"] > 3.0

"""Capability probes: post_swap_gap (does the model read the body?) and fact_accuracy (does it restate it?)."""

import torch

from nplus.evaluation.probes import fact_accuracy, likelihood_fact_check, post_swap_gap, response_nll, sequence_logprob
from nplus.tasks.gold import GoldJudge

PAD = 1


class _Lookup(torch.nn.Module):
    """A causal LM stand-in: predicts the next token as ``table[current token]`` (log-prob 0) or, when
    ``copy`` is set, as the token that followed the last earlier occurrence of the current token."""

    def __init__(self, vocab: int, copy: bool):
        super().__init__()
        self.vocab, self.copy = vocab, copy
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, logits_to_keep=0):
        B, L = input_ids.shape
        logits = torch.full((B, L, self.vocab), -20.0)
        for b in range(B):
            ids = input_ids[b].tolist()
            for t in range(L):
                nxt = 2
                if self.copy:
                    for s in range(t - 1, -1, -1):
                        if ids[s] == ids[t]:
                            nxt = ids[s + 1]
                            break
                logits[b, t, nxt] = 20.0
        return type("Out", (), {"logits": logits})()


ROWS = [
    {"subreddit": "s", "title": "t", "post": p, "summary": q} for p, q in (("5 6", "6"), ("7 8", "8"), ("9 3", "3"))
]


def _encode_query(subreddit, title, post):
    return [4] + [int(w) for w in post.split()] + [5]


def _encode_response(summary):
    return [6 if summary == "6" else int(summary)]


def test_post_swap_gap_is_zero_for_a_model_that_ignores_the_body_and_positive_for_a_copier():
    blind = post_swap_gap(_Lookup(12, copy=False), ROWS, _encode_query, _encode_response, PAD)
    assert abs(blind["post_swap_gap"]) < 1e-6
    copier = _Lookup(12, copy=True)
    # query = post words, then the post's first word again as a cue; the reference is the word that followed it
    # in the post, so only reading the post predicts it (another post's body predicts another word)
    rows = [{**r, "summary": r["post"].split()[1]} for r in ROWS]
    enc_q = lambda sub, title, post: [int(w) for w in post.split()] + [int(post.split()[0])]
    enc_r = lambda summary: [int(summary)]
    read = post_swap_gap(copier, rows, enc_q, enc_r, PAD)
    assert read["post_swap_gap"] > 10 and read["reference_nll"] < 1e-6


def test_response_nll_scores_only_the_response_tokens():
    m = _Lookup(12, copy=False)  # always predicts token 2
    nll = response_nll(m, [[3, 4], [3]], [[2, 2], [7]], PAD)
    assert nll[0] < 1e-6 and nll[1] > 30


def test_sequence_logprob_ignores_padding_and_sums_the_tokens_after_the_first():
    m = _Lookup(12, copy=False)  # always predicts token 2: log-prob 0 for a 2, about -40 for anything else
    lp = sequence_logprob(m, torch.tensor([[3, 2, 2, PAD, PAD], [3, 2, 7, 2, PAD], [3, 2, 7, 7, 2]]), PAD)
    assert abs(lp[0]) < 1e-6 and -45 < lp[1] < -35 and -85 < lp[2] < -75


def test_likelihood_fact_check_credits_only_a_model_that_reads_the_fact_from_the_post():
    # "post" 5 6 (or 7 8), then the cue 5 (7): the right summary restates the word that followed it in the post
    right = torch.tensor([[5, 6, 5, 6], [7, 8, 7, 8], [9, 3, 9, 3]])
    wrong = torch.tensor([[5, 6, 5, 9], [7, 8, 7, 4], [9, 3, 9, 4]])
    assert likelihood_fact_check(_Lookup(12, copy=True), right, wrong, PAD) == 1.0
    # a model blind to the post finds both equally likely: a tie is not a pair ranked right
    assert likelihood_fact_check(_Lookup(12, copy=False), right, wrong, PAD) == 0.0


def test_fact_accuracy_counts_only_facts_inside_the_query():
    post = "I (24F) and my boyfriend (26M) have been dating for 2 years.\nI feel so hurt right now."
    facts = {
        "event": "cheated",
        "relation": "boyfriend",
        "ask": None,
        "duration": "2 years",
        "feeling": "hurt",
        "narrator": "24F",
        "counterpart": "26M",
    }
    judge = GoldJudge({post: facts})
    truncated_query = "TITLE: x\n\nPOST: I (24F) and my boyfriend (26M) have been dating for 2 years."  # feeling cut
    summary = "I (24F) found out my bf (26M) of 3 years cheated on me. Feeling hurt."
    out = fact_accuracy(judge, [post], [truncated_query], [summary])
    # visible: narrator, counterpart, duration (feeling was truncated away); right: the two ages
    assert out["fact_accuracy"] == 2 / 3
    assert out["fact_accuracy_duration"] == 0.0 and out["fact_accuracy_narrator"] == 1.0
    assert out["fact_accuracy_feeling"] != out["fact_accuracy_feeling"]  # NaN: never in the query


def test_fact_check_pairs_differ_in_one_fact_and_the_judge_agrees():
    """The reward model's fact-checking probe: each minimal pair keeps the wording and swaps one slot's value, so a
    scorer that checks facts (here the gold judge itself) ranks every right summary first, and a scorer that reads
    only the text's surface cannot."""
    import random

    from nplus.evaluation.probes import fact_check_accuracy
    from nplus.tasks import synth
    from nplus.tasks.summaries import fact_check_pairs

    posts = synth.build_posts(0, "tiny")["validation"]
    judge = GoldJudge({p.text: p.facts for p in posts})
    rows = [(p, *pair) for i, p in enumerate(posts) for pair in fact_check_pairs(p, i)]
    assert {slot for _, slot, _, _ in rows} >= {"event", "relation", "narrator", "counterpart"}
    for post, slot, right, wrong in rows:
        assert right != wrong and judge.score(post.text, right) > judge.score(post.text, wrong)
        assert slot in judge.stated(post.text, right) and slot not in judge.stated(post.text, wrong)
    gold = fact_check_accuracy(
        [judge.score(p.text, r) for p, _, r, _ in rows],
        [judge.score(p.text, w) for p, _, _, w in rows],
        [s for _, s, _, _ in rows],
    )
    assert gold["fact_check_accuracy"] == 1.0 and gold["fact_check_accuracy_event"] == 1.0
    rng = random.Random(0)  # a coin flip is at chance, per slot as overall
    coin = fact_check_accuracy([rng.random() for _ in rows], [rng.random() for _ in rows], [s for _, s, _, _ in rows])
    assert 0.3 < coin["fact_check_accuracy"] < 0.7


def test_fact_check_set_follows_the_built_rows_when_query_truncation_drops_some(tmp_path):
    """details.query_truncation=drop leaves the over-long validation posts out of the built data: the RM's
    fact-check probe must pair each remaining row with its own post (it once assumed the generator's order)."""
    from nplus.config import apply_overrides
    from nplus.pipeline import fact_check_set, load_data
    from nplus.presets import preset
    from nplus.tasks.synth import build_posts
    from nplus.tasks.world import SLOTS

    # smoke lengths with room for most, not all, of the small corpus's queries
    cfg = apply_overrides(
        preset("smoke"),
        details={"query_truncation": "drop"},
        hparams={"lengths.query": 128, "lengths.sft_total": 160, "lengths.pref_total": 168},
    )
    data = load_data(cfg, tmp_path)
    val = data.sft["validation"]
    generated = build_posts(cfg.task.synth_seed, cfg.task.synth_scale)["validation"]
    assert len(val) < len(generated), "the smoke queries should drop some validation posts"
    right, wrong, slots = fact_check_set(cfg, data, n=16)
    by_text = {p.text: p for p in generated}
    expected = sum(sum(1 for s in SLOTS if by_text[t].facts[s]) for t in val["post"][:16])
    assert right.shape == wrong.shape and len(slots) == right.shape[0] > 0
    # each pair starts with its own row's query
    pad = data.tokenizer.pad_token_id
    first_query = [t for t in val[0]["query_token"] if t != pad]
    assert right[0, : len(first_query)].tolist() == first_query
    assert len(slots) == expected

"""The throughput tooling (nplus/tooling/perf.py, bench, bench_gpu): FLOP formulas by hand, table builders on a tiny
config, and the rollout's value-only pass. No timing is asserted."""

import json

import torch

from nplus.models import ScalarModel, SharedTrunkPolicy, ladder_config
from nplus.stages.online import Actor
from nplus.tooling import perf


def test_flop_formulas_by_hand():
    s = perf.Shape(hidden=4, layers=1, vocab=10, ffn=16)
    # per token and layer: 4h² + 2hf = 64 + 128 = 192 weights; 3 keys × 2 × h = 24 attention MACs
    assert perf.trunk_flops(s, batch=2, query=0, new=3) == 2 * 2 * 3 * (192 + 2 * 3 * 4)  # 2592
    assert perf.head_flops(s, batch=2, positions=1) == 2 * 2 * 1 * 4 * 10  # 160
    # prefill of 3 tokens + 1 logit, then one cached step attending to 4 keys + 1 logit
    assert perf.generation_flops(s, batch=2, query=3, response=2) == 2592 + 160 + 2 * 2 * (192 + 2 * 4 * 4) + 160
    L = 5
    # one layer, its last, on 3 of 5 positions: QKV 5 × 3 × 16, then 3 × (output 16 + FFN 128 + attention 2 × 5 × 4)
    assert perf.suffix_trunk_flops(s, batch=2, length=L, keep=3) == 2 * 2 * (240 + 3 * 184)  # 3168
    assert perf.suffix_trunk_flops(s, 2, L, L) == perf.trunk_flops(s, 2, 0, L)  # keeping all is the plain forward
    deeper = perf.Shape(hidden=4, layers=3, vocab=10, ffn=16)
    assert perf.suffix_trunk_flops(deeper, 2, L, 3) == 2 * perf.trunk_flops(s, 2, 0, L) + 3168
    assert perf.scoring_flops(s, 2, 3, 2) == 3 * 3168 + perf.head_flops(s, 2, 3)
    assert perf.training_flops(s, 2, 3, 2, epochs=4) == 12 * (2 * 3168 + perf.head_flops(s, 2, 3))
    assert set(perf.phase_flops(s, 2, 3, 2, 1)) == {"generation", "scoring", "training"}


def test_ladder_shape_matches_the_model_config():
    assert perf.ladder_shape("tiny", 1750) == perf.Shape.of(ladder_config("tiny", 1750, 64, 0, 1))


def test_cost_table_rows_and_format():
    rows = perf.cost_table(rungs=("nano",), batches=(2, 4), query=8, response=4, epochs=1, vocab=40, isolate=False)
    assert [(r["rung"], r["batch"]) for r in rows] == [("nano", 2), ("nano", 4)]
    for r in rows:
        assert r["update_s"] > 0 and r["episodes_per_s"] > 0 and r["peak_rss_mib"] >= r["rss_before_mib"] > 0
    text = perf.format_table(rows).splitlines()
    assert len(text) == 3 and text[0].split()[:2] == ["rung", "batch"]


def test_random_queries_are_left_padded():
    q = perf.random_queries(6, 10, vocab=40)
    real = q != perf.PAD_ID
    assert q.shape == (6, 10) and bool(real[:, -1].all())
    assert bool((real.int().diff(dim=1) >= 0).all())  # pads only before the first real token
    assert int(real.sum(1).min()) >= 5


def test_value_only_pass_equals_the_full_forward():
    cfg = ladder_config("nano", 40, 32, 0, 1)
    policy, _, rm, critic = perf.random_models(cfg)
    qr = torch.cat([perf.random_queries(3, 8, 40), torch.randint(2, 40, (3, 4))], 1)
    outputs = {}
    for suffix in (False, True):  # ppo.last_layer: all, response
        for kind, actor in (
            ("separate", Actor(policy, critic, None, 1, suffix)),
            ("shared", Actor(None, None, SharedTrunkPolicy(policy, rm.head), 1, suffix)),
        ):
            actor.eval()
            with torch.no_grad():
                logits, values = actor(qr, 1, 4)
                assert logits.shape == (3, 4, 40) and values.shape == (3, 4)
                assert torch.equal(actor.values(qr, 1, 4), values)
            outputs[kind, suffix] = logits, values
    for kind in ("separate", "shared"):  # the last layer on the response positions: the same outputs
        for got, want in zip(outputs[kind, True], outputs[kind, False]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_bench_gpu_runs_on_cpu_with_the_tiny_config(capsys):
    from nplus.tooling import bench_gpu

    assert bench_gpu.main(["--tiny", "--updates", "1", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert report["device"] == "cpu" and set(report["phases"]) == {"generation", "scoring", "training"}
    assert all(p["tokens_per_s"] > 0 and p["mfu"] > 0 for p in report["phases"].values())
    assert report["peak_memory_mib"] > 0


def test_pythia_1b_shape_has_pythia_1b_parameter_count():
    from transformers import GPTNeoXForCausalLM

    from nplus.tooling.bench_gpu import pythia_1b_config

    with torch.device("meta"):
        model = GPTNeoXForCausalLM(pythia_1b_config())
    # EleutherAI/pythia-1b: 1,011,781,632 parameters (vocab 50304)
    assert sum(p.numel() for p in model.parameters()) == 1_011_781_632


def test_by_length_equals_one_padded_pass_in_values_gradients_and_row_order():
    """models.by_length (ppo.length_chunks): rows grouped by length, shared leading pads dropped — the same outputs
    and parameter gradients as one padded pass up to float rounding, in the input's row order."""
    from nplus.models import by_length
    from nplus.rewards import rm_score_fn

    cfg = ladder_config("nano", 40, 40, 0, 1)
    policy, _, rm, critic = perf.random_models(cfg)
    q = perf.random_queries(7, 12, 40, seed=3)
    q[2, :11] = perf.PAD_ID  # one row of a single query token: its group drops 11 columns
    qr = torch.cat([q, torch.randint(2, 40, (7, 5))], 1)
    results = {}
    for chunks in (1, 3, 7, 20):
        actor = Actor(policy, critic, None, chunks)
        actor.zero_grad(set_to_none=True)
        logits, values = actor(qr, perf.PAD_ID, 5)
        (logits.logsumexp(-1).sum() + values.sum()).backward()
        score = rm_score_fn(rm, 0.0, 1.0, perf.PAD_ID, "eos", chunks)(q, qr[:, 12:], [""] * 7)
        responses = qr[:, 12:].clone()
        responses[0, 2:] = perf.PAD_ID  # a response truncated after its third token
        responses[3] = perf.PAD_ID  # an empty one: the last real token is the query's
        for token in ("eos", "last_position", "mean"):  # ppo.last_layer = response: the same scores
            suffixed = rm_score_fn(rm, 0.0, 1.0, perf.PAD_ID, token, chunks, suffix=True)(q, responses, [""] * 7)
            plain = rm_score_fn(rm, 0.0, 1.0, perf.PAD_ID, token, chunks)(q, responses, [""] * 7)
            torch.testing.assert_close(suffixed, plain, rtol=1e-5, atol=1e-6)
        grads = [p.grad.clone() for p in actor.parameters() if p.grad is not None]
        results[chunks] = (logits.detach(), values.detach(), score.detach(), grads)
    assert results[1][0].shape == (7, 5, 40) and results[1][1].shape == (7, 5) and results[1][2].shape == (7,)
    for chunks in (3, 7, 20):
        for got, want in zip(results[chunks][:3], results[1][:3]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for got, want in zip(results[chunks][3], results[1][3]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # each group really is cut: fn sees no column that is padding in all of its rows
    widths = []
    by_length(lambda ids: widths.append(ids.size(1)) or ids[:, -1:], qr, perf.PAD_ID, 3)
    lead = (qr != perf.PAD_ID).long().cumsum(1).eq(0).sum(1).sort(descending=True).values
    assert widths == [qr.size(1) - int(g.min()) for g in lead.chunk(3)]
    assert widths[0] < qr.size(1)  # the shortest rows come first, and their group is cut
    # chunks = 1 is the plain call, bit for bit
    assert torch.equal(by_length(lambda ids: critic(ids, perf.PAD_ID), qr, perf.PAD_ID, 1), critic(qr, perf.PAD_ID))


def test_suffix_hidden_equals_the_full_forward_in_outputs_and_gradients():
    """models.suffix_hidden: the last layer on the kept positions only is the full forward's slice, in hidden states
    and parameter gradients, for parallel and sequential residuals, partial and full rotary, sdpa and eager
    attention, left padding and none (the is_causal mask path), one layer and three; dropout off."""
    from transformers import GPTNeoXModel

    from nplus.models import suffix_hidden, suffix_supported

    q = perf.random_queries(5, 10, 40, seed=4)
    q[1, :9] = perf.PAD_ID  # a one-token query
    padded = torch.cat([q, torch.randint(2, 40, (5, 6))], 1)  # (5, 16)
    unpadded = torch.randint(2, 40, (3, 16))
    for rung, parallel, rotary, attn in (
        ("nano", True, 0.25, "sdpa"),
        ("xs", False, 1.0, "eager"),
        ("micro", True, 0.5, "sdpa"),
    ):
        cfg = ladder_config(rung, 40, 32, 0, 1, rotary_pct=rotary)
        cfg.use_parallel_residual = parallel
        for k in ("attention_dropout", "hidden_dropout"):
            setattr(cfg, k, 0.0)
        cfg._attn_implementation = attn
        torch.manual_seed(0)
        trunk = GPTNeoXModel(cfg).train()
        assert suffix_supported(trunk)
        for ids in (padded, unpadded):
            mask = ids != perf.PAD_ID
            full = trunk(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0),
                use_cache=False,
            ).last_hidden_state[:, -7:]
            trunk.zero_grad(set_to_none=True)
            full.pow(2).sum().backward()
            want = [p.grad.clone() for p in trunk.parameters()]
            trunk.zero_grad(set_to_none=True)
            fast = suffix_hidden(trunk, ids, perf.PAD_ID, 7)
            fast.pow(2).sum().backward()
            torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
            for got, w in zip((p.grad for p in trunk.parameters()), want):
                torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-5)
    # the causal LM's kept logits: HF's own logits_to_keep path, through the suffix
    from nplus.models import lm_logits

    policy = perf.random_models(ladder_config("nano2", 40, 32, 0, 1))[0]
    mask = padded != perf.PAD_ID
    want = policy(
        input_ids=padded,
        attention_mask=mask,
        position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0),
        use_cache=False,
        logits_to_keep=7,
    ).logits
    torch.testing.assert_close(lm_logits(policy, padded, perf.PAD_ID, 7, suffix=True), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(lm_logits(policy, padded, perf.PAD_ID, 7), want)  # suffix off: HF's own path, bit for bit


def test_suffix_falls_back_to_the_full_forward_on_other_architectures():
    """A trunk suffix_hidden has no path for (here GPT-2) gets the full forward, sliced: the same numbers."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    from nplus.models import lm_logits, suffix_supported

    cfg = GPT2Config(
        vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    torch.manual_seed(0)
    lm, trunk = GPT2LMHeadModel(cfg).eval(), GPT2Model(cfg).eval()
    assert not suffix_supported(trunk) and not suffix_supported(lm.base_model)
    ids = torch.cat([perf.random_queries(3, 8, 40, seed=5), torch.randint(2, 40, (3, 4))], 1)
    mask = ids != perf.PAD_ID
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        want = lm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=5).logits
        assert torch.equal(lm_logits(lm, ids, perf.PAD_ID, 5, suffix=True), want)
        critic = ScalarModel(trunk)
        assert torch.equal(critic(ids, perf.PAD_ID, 5), critic(ids, perf.PAD_ID)[:, -5:])  # suffix off: a slice
        # the head on 5 rows instead of 12: float rounding only
        torch.testing.assert_close(
            critic(ids, perf.PAD_ID, 5, suffix=True), critic(ids, perf.PAD_ID)[:, -5:], rtol=1e-5, atol=1e-6
        )

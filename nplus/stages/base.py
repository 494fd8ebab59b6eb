"""Base models for the embedded task: a short language-model pretraining on posts (the analogue of Pythia's).

The base model is shared by every training seed and every detail variant (as a Pythia checkpoint is), so it
keeps the ladder's dropout and is not affected by any detail.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPTNeoXForCausalLM

from nplus.config import Config
from nplus.data.formatting import format_query
from nplus.models import BASE_DROPOUT, LADDER_DROPOUT_KEYS, count_parameters, ladder_config, set_dropout
from nplus.stages.common import MetricsLog, check_finite, lr_at, progress, seed_everything, set_lr


def token_stream(sft_train, tokenizer, corpus: str) -> torch.Tensor:
    """All training posts (formatted as queries; with ``posts_tldr`` followed by the summary) joined by EOS
    → (N,) token ids."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    texts = [format_query(r["subreddit"], r["title"], r["post"]) + (" " + r["summary"] if corpus == "posts_tldr" else "")
             for r in sft_train]
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def pretrain_base(cfg: Config, sft_train, tokenizer, out_dir: Path) -> dict:
    """Train a ladder model from scratch on random windows of the post stream; save with safetensors."""
    m = cfg.model
    gen = seed_everything(m.pretrain_seed)
    # Positions for the longest sequence of any variant: the base model is shared, so it must also fit the
    # query + response totals that query_truncation=hard builds (nplus.data.builder.applied_lengths).
    n = cfg.lengths
    max_pos = max(n.sft_total, n.pref_total, n.query + max(n.sft_response, n.pref_response, cfg.ppo.response_length),
                  m.pretrain_seq_len) + 8
    model = GPTNeoXForCausalLM(ladder_config(m.name, len(tokenizer), max_pos, tokenizer.eos_token_id, tokenizer.pad_token_id))
    # Pretrained without dropout, as Pythia was; the saved config keeps the ladder's 0.1, which is the "model
    # default" that details.dropout=model_default re-enables downstream. Measured on demo: SFT gold -5.4 with
    # posts_tldr and no dropout vs -7.6 with dropout (event copied 78 % vs 65 % of the time).
    set_dropout(model, "disabled")
    model.train()
    stream = token_stream(sft_train, tokenizer, m.pretrain_corpus)
    opt = torch.optim.AdamW(model.parameters(), lr=m.pretrain_lr, eps=1e-8)
    log = MetricsLog(out_dir / "metrics.jsonl", "base")
    bar = progress(m.pretrain_steps, f"base {m.name}")
    loss_val = float("nan")
    for step in range(m.pretrain_steps):
        set_lr(opt, lr_at(m.pretrain_lr, step, m.pretrain_steps, "cosine"))
        starts = torch.randint(0, stream.numel() - m.pretrain_seq_len - 1, (m.pretrain_batch,), generator=gen)
        window = torch.stack([stream[s:s + m.pretrain_seq_len + 1] for s in starts.tolist()])  # (B, S+1)
        logits = model(input_ids=window[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), window[:, 1:].reshape(-1))
        check_finite(loss, "base", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_val = loss.item()
        if step % 10 == 0 or step == m.pretrain_steps - 1:
            log.log(step, **{"base/loss": loss_val})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_val:.3f}")
    bar.close()
    model.config.update(dict.fromkeys(LADDER_DROPOUT_KEYS, BASE_DROPOUT))  # set_dropout zeroed the config too
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "model")
    model.eval()
    return {"loss": loss_val, "params": count_parameters(model), "tokens": int(stream.numel()),
            **copy_probe(model, len(tokenizer))}


@torch.no_grad()
def copy_probe(model, vocab_size: int, n: int = 16, length: int = 48, seed: int = 0) -> dict:
    """In-context copying, the capability behind "state the post's facts": mean NLL of a random token sequence
    the first time (≈ ln V) and when it is repeated. A model with induction heads predicts the repeat
    (second ≪ first); ``copy_gain`` = first − second. Summaries that restate ages and durations need it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab_size, (n, length), generator=g)
    ids = torch.cat([x, x], 1)  # (n, 2·length)
    logp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)
    nll = -logp.gather(2, ids[:, 1:, None]).squeeze(2)  # (n, 2·length − 1): position t predicts token t+1
    first, second = float(nll[:, :length - 1].mean()), float(nll[:, length:].mean())
    return {"copy_nll_first": first, "copy_nll_repeat": second, "copy_gain": first - second}

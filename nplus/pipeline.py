"""base → SFT → RM → PPO for one seed, with content-addressed reuse of upstream stages.

1. provenance (config + hash, details, env, command) into the run directory, before any compute
2. data: generate (tldr-synth) or load (hub / local), validate, tokenize into the paper's pre-tokenized form
3. base model: pretrained ladder model (cached) or a hub / local checkpoint
4. SFT (cached by the SFT stage hash) and its evaluation (ROUGE, win rate against the reference)
5. RM (cached by the RM stage hash): accuracy, normalization, padding invariance
6. the policy-optimization algorithm (cfg.algorithm: PPO, DPO, RLOO, REINFORCE or GRPO) in the run directory,
   evaluation, sanity checks, summary.json, then the DONE marker
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import shutil
import time
from pathlib import Path

import torch
from datasets import load_from_disk

from nplus import bases, ops
from nplus.config import Config, ConfigError, config_hash
from nplus.data.build_cmd import load_hub_tokenizer
from nplus.data.builder import build_preferences, build_sft, data_details
from nplus.data.formatting import prepare_tokenizer
from nplus.data.loader import load_comparisons, load_sft
from nplus.data.relabel import synth_relabelled
from nplus.data.sources import HUB_NAME, default_cache, synth_dir
from nplus.evaluation.judge_factory import make_judge
from nplus.evaluation.judges import GoldJudgeAdapter
from nplus.evaluation.probes import fact_check_sequences
from nplus.models import LADDER, RewardNormalization, ScalarModel, is_ladder, load_causal_lm
from nplus.rewards import ScoreFn, TrainingReward, rm_score_fn, text_source_score_fn
from nplus.rundir import (
    RUN_OUTPUTS,
    append_jsonl,
    artifact,
    atomic_write_json,
    check_writable_dir,
    done_problem,
    mark_done,
    read_json,
    read_jsonl,
    run_dir_lock,
    save_dataset,
    share_file_modes,
    write_provenance,
)
from nplus.stages.common import as_tensor, dist, sample, seed_everything
from nplus.stages.critic_free import train_critic_free
from nplus.stages.dpo import train_dpo
from nplus.stages.online import response_logits, response_logprobs
from nplus.stages.policy_eval import EvalSet, eval_set_from, evaluate_policy
from nplus.stages.ppo import train_ppo
from nplus.stages.rm import score_sequences, train_rm
from nplus.stages.sft import train_sft
from nplus.tasks.synth import build_posts
from nplus.tasks.tokenizer import load_tokenizer
from nplus.tracking import mirror_to_wandb, require_wandb


@dataclasses.dataclass
class Data:
    tokenizer: object
    sft: object  # built DatasetDict
    pref: object  # built DatasetDict
    judge: object
    data_dir: Path | None


@dataclasses.dataclass
class Sources:
    """What a run reads before building anything: raw datasets (schema-checked), tokenizer, judge."""

    raw_sft: object  # DatasetDict in the public SFT schema
    raw_cmp: object  # DatasetDict in the public comparisons schema
    tokenizer: object
    judge: object
    data_dir: Path | None
    source_id: str


PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_model_source(name: str) -> None:
    """Fail fast, naming ``model.name``, on a base model that cannot be loaded: not a ladder rung, an existing
    directory or a hub name; a directory without config.json; or one whose weights are pickles only
    (``pytorch_model.bin``). nplus loads safetensors only and never unpickles a checkpoint."""
    if is_ladder(name):
        return
    path = Path(name)
    if not path.exists():
        if HUB_NAME.match(name) and not name.startswith((".", "/", "~")):
            return  # a hub name: the tokenizer check that follows fails fast without hub access
        raise ConfigError(
            f"model.name={name!r} is neither a ladder rung ({', '.join(LADDER)}), an existing model "
            "directory nor a hub name such as 'EleutherAI/pythia-1b-deduped'"
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(
            f"model.name={name!r}: expected a model directory with config.json (a `save_pretrained` "
            "or `hf download` directory)"
        )
    files = [p.name for p in path.iterdir() if p.is_file()]
    if not any(f.endswith(".safetensors") or f == "model.safetensors.index.json" for f in files):
        pickles = sorted(f for f in files if f.endswith(PICKLE_WEIGHTS))
        found = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
        raise ConfigError(
            f"model.name={name!r} holds {found}; nplus loads *.safetensors only and never unpickles a "
            "checkpoint: download the model's safetensors files, or convert it where you trust the "
            "file (`AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR)` writes them)"
        )


def open_sources(cfg: Config, cache: Path) -> Sources:
    """Step 0 of a run: everything that can be checked without compute. For the public task (``tldr``) that
    is the model directory, the judge's API key, the tokenizer (it must have EOS) and both datasets' schemas,
    so that a bad input fails before provenance, data building or training."""
    if cfg.task.name == "tldr-synth":
        data_dir = synth_dir(cfg, cache)
        # tldr-synth; tldr-synth:<judge>, its training pairs relabelled here; or relabelled pairs (nplus label)
        cmp_source = cfg.task.comparisons_source
        cmp_path = cmp_source
        if cmp_source.startswith("tldr-synth:"):
            cmp_path = str(synth_relabelled(data_dir, cmp_source.split(":", 1)[1], cache) / "comparisons")
        return Sources(
            load_sft("tldr-synth", data_dir),
            load_comparisons(cmp_path, data_dir),
            load_tokenizer(data_dir / "tokenizer"),
            GoldJudgeAdapter.from_dir(data_dir),
            data_dir,
            data_dir.name if cmp_source == "tldr-synth" else f"{data_dir.name}|{cmp_source}",
        )
    check_model_source(cfg.model.name)  # again: open_sources is also called on its own (load_data)
    judge = make_judge("openai", model="gpt-3.5-turbo-0125")  # needs OPENAI_API_KEY
    tokenizer = load_hub_tokenizer(cfg.model.name, flag="--set model.name=")
    if tokenizer.eos_token_id is None:  # every data-stage detail that appends EOS needs one
        raise ConfigError(
            f"model.name={cfg.model.name!r}: its tokenizer has no eos_token; set one in its "
            "tokenizer_config.json (Pythia's is '<|endoftext|>')"
        )
    raw_sft, raw_cmp = load_sft(cfg.task.sft_source), load_comparisons(cfg.task.comparisons_source)
    return Sources(
        raw_sft,
        raw_cmp,
        tokenizer,
        judge,
        None,
        f"{cfg.task.sft_source}|{cfg.task.comparisons_source}|{cfg.model.name}",
    )


def load_data(cfg: Config, cache: Path, sources: Sources | None = None) -> Data:
    """Step 2: the same code path for both worlds after loading (``sources`` from :func:`open_sources`)."""
    s = sources if sources is not None else open_sources(cfg, cache)
    tokenizer = prepare_tokenizer(s.tokenizer, cfg.details.pad_token)
    sft, pref = built_datasets(cfg, s.raw_sft, s.raw_cmp, tokenizer, cache, s.source_id)
    return Data(tokenizer, sft, pref, s.judge, s.data_dir)


def built_datasets(cfg: Config, raw_sft, raw_cmp, tokenizer, cache: Path, source_id: str):
    """The pre-tokenized datasets, built once per (data source, tokenizer, lengths, data-stage details) and cached:
    newline truncation re-encodes long posts many times, so building is the slowest part of a small run."""
    key = config_hash(
        {
            "task": dataclasses.asdict(cfg.task),
            "source": source_id,
            "lengths": dataclasses.asdict(cfg.lengths),
            "details": data_details(cfg.details),
            "version": 1,
        }
    )
    with artifact(cache, "built", key) as (path, built):
        if not built:
            if cfg.task.max_sft_train:
                raw_sft["train"] = raw_sft["train"].select(range(min(cfg.task.max_sft_train, len(raw_sft["train"]))))
            if cfg.task.max_comparisons_train:
                raw_cmp["train"] = raw_cmp["train"].select(
                    range(min(cfg.task.max_comparisons_train, len(raw_cmp["train"])))
                )
            sft, sft_stats = build_sft(raw_sft, tokenizer, cfg.lengths, cfg.details)
            pref, pref_stats = build_preferences(raw_cmp, tokenizer, cfg.lengths, cfg.details)
            save_dataset(sft, path / "sft")
            save_dataset(pref, path / "preferences")
            atomic_write_json(path / "stats.json", {"sft": sft_stats, "preferences": pref_stats})
    return load_from_disk(str(path / "sft")), load_from_disk(str(path / "preferences"))


def base_model(cfg: Config, data: Data, cache: Path) -> Path | str:
    """Step 3: the committed base model built with this configuration (nplus/bases, checked), else one built into
    the cache with the same recipe, or the hub name / local path itself."""
    if not is_ladder(cfg.model.name):
        return cfg.model.name
    tokenizer_file = data.data_dir / "tokenizer" / "tokenizer.json" if data.data_dir else None
    committed = bases.committed_base(cfg, tokenizer_file)
    if committed is not None:
        return committed
    with artifact(cache, "base", cfg.stage_hash("base")) as (path, built):
        if not built:
            bases.build(cfg, data, path)
    return path / "model"


def _eval_fn(cfg: Config, data: Data, es: EvalSet, reward=None):
    def run(policy, temperature: float | None = None):
        g = torch.Generator().manual_seed(cfg.seed + 7)
        return evaluate_policy(
            policy,
            es,
            data.tokenizer,
            data.tokenizer.pad_token_id,
            data.tokenizer.eos_token_id,
            cfg.ppo.response_length,
            temperature or cfg.sampling_eval_temperature,
            data.judge,
            reward_fn=reward,
            generator=g,
        )

    return run


@contextlib.contextmanager
def stage_artifact(cache: Path, stage: str, key: str):
    """``rundir.artifact`` for a stage that every rank trains together: under `accelerate launch` the main
    process owns the directory and the marker, and the ranks meet at barriers instead of a file lock."""
    D = dist()
    if D.world == 1:
        with artifact(cache, stage, key) as result:
            yield result
        return
    path = Path(cache) / stage / key
    built = done_problem(path) is None  # every rank checks the same files before the main one may wipe them
    D.barrier()
    if not built and D.is_main:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    D.barrier()
    yield path, built
    D.barrier()
    if not built and D.is_main:
        share_file_modes(path)
        mark_done(path)
    D.barrier()


def sft_stage(cfg: Config, data: Data, base: Path | str, cache: Path, es: EvalSet) -> Path:
    """Step 4: train + evaluate SFT once per SFT stage hash."""
    with stage_artifact(cache, "sft", cfg.stage_hash("sft")) as (path, built):
        if not built:
            t0 = time.time()
            train = train_sft(
                cfg,
                Path(base) if not isinstance(base, str) else base,
                data.sft["train"],
                data.tokenizer,
                path,
                path / "metrics.jsonl",
            )
            if not dist().is_main:
                return path
            atomic_write_json(path / "config.json", cfg.stage_dict("sft"))
            policy = load_causal_lm(path / "model")
            agg, rows = _eval_fn(cfg, data, es)(policy)
            for r in rows:
                append_jsonl(path / "samples.jsonl", {"stage": "sft", **r})
            probes = bases.base_probes(cfg, data, policy)  # does the policy read the post? (post_swap_gap)
            atomic_write_json(path / "eval.json", {**agg, **probes, **train, "wall_time_s": time.time() - t0})
    return path


def rm_stage(cfg: Config, data: Data, sft_path: Path, cache: Path) -> Path:
    """Step 5: train + evaluate the reward model once per RM stage hash."""
    with stage_artifact(cache, "rm", cfg.stage_hash("rm")) as (path, built):
        if not built:
            t0 = time.time()

            def policy_scores(rm: ScalarModel) -> torch.Tensor:
                # lmhp's normalization target: scores of SFT policy samples on training queries.
                policy = load_causal_lm(sft_path / "model").to(dist().device).eval()
                g = torch.Generator().manual_seed(cfg.seed + 11)
                q = as_tensor(data.sft["train"].select(range(min(256, len(data.sft["train"]))))["query_token"]).to(
                    dist().device
                )
                tok = data.tokenizer
                resp = ops.truncate_after_eos(
                    sample(
                        policy,
                        q,
                        tok.pad_token_id,
                        tok.eos_token_id,
                        cfg.ppo.response_length,
                        cfg.ppo.temperature,
                        "fixed_length_then_truncate",
                        g,
                    ).responses,
                    tok.eos_token_id,
                    tok.pad_token_id,
                )
                return score_sequences(rm, torch.cat([q, resp], 1), tok.pad_token_id, cfg.details.reward_token)

            res = train_rm(
                cfg,
                sft_path / "model",
                data.pref,
                data.sft["train"],
                data.tokenizer,
                path,
                path / "metrics.jsonl",
                policy_scores,
                gold=getattr(data.judge, "gold", None),
                fact_check=fact_check_set(cfg, data),
            )
            if dist().is_main:
                atomic_write_json(path / "config.json", cfg.stage_dict("rm"))
                atomic_write_json(path / "eval.json", {**res, "wall_time_s": time.time() - t0})
    return path


def fact_check_set(cfg: Config, data: Data, n: int = 128):
    """tldr-synth: the reward model's fact-checking minimal pairs on the first ``n`` validation posts, with the
    run's queries (format, truncation, padding side undone); None for the real task, which has no latent facts."""
    if cfg.task.name != "tldr-synth":
        return None

    by_text = {p.text: p for p in build_posts(cfg.task.synth_seed, cfg.task.synth_scale)["validation"]}
    # the built rows in order (details.query_truncation=drop leaves out the over-long ones), each with its facts
    val = data.sft["validation"].select(range(min(n, len(data.sft["validation"]))))
    missing = [text for text in val["post"] if text not in by_text]
    if missing:
        raise RuntimeError(
            f"{len(missing)} tldr-synth validation posts are not the generator's: regenerate the data cache"
        )
    posts = [by_text[text] for text in val["post"]]
    pad = data.tokenizer.pad_token_id
    queries = [[t for t in row if t != pad] for row in val["query_token"]]
    return fact_check_sequences(posts, queries, data.tokenizer, cfg.details.preference_eos, pad)


def reward_for(cfg: Config, data: Data, rm_path: Path, norm: RewardNormalization) -> tuple[TrainingReward, ScoreFn]:
    """reward.source for the online loop (the training posts and, unless the RM, the text score) and for the
    evaluation's proxy_reward. Text scores are centred on the mean over (up to 2000) training references, as the
    RM is by details.reward_normalization."""
    train = data.sft["train"]
    train_posts = list(train["post"])
    if cfg.reward.source == "rm":
        reward_model = ScalarModel.load(rm_path / "model").to(dist().device).eval()
        score = rm_score_fn(reward_model, norm.bias, norm.gain, data.tokenizer.pad_token_id, cfg.details.reward_token)
        return TrainingReward(train_posts), score
    refs = train.select(range(min(len(train), 2000)))
    score = text_source_score_fn(
        cfg.reward.source,
        cfg.reward.rule,
        getattr(data.judge, "gold", None),
        data.tokenizer,
        list(zip(refs["post"], refs["summary"])),
    )
    return TrainingReward(train_posts, score), score


@torch.no_grad()
def policy_kl(cfg: Config, policy, ref, es: EvalSet, tokenizer) -> float:
    """Sequence-level KL(π_T ‖ π_ref,T) on validation prompts: k1 summed over response tokens, averaged over
    samples drawn at the training temperature. Always temperature-scaled, so variants are comparable."""
    g = torch.Generator().manual_seed(cfg.seed + 13)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    total, n = 0.0, 0
    device = next(policy.parameters()).device
    for q in es.query_tokens.to(device).split(64):
        resp = sample(
            policy, q, pad, eos, cfg.ppo.response_length, cfg.ppo.temperature, "fixed_length_then_truncate", g
        ).responses
        post = ops.truncate_after_eos(resp, eos, pad)
        qr = torch.cat([q, resp], 1)
        T = resp.size(1)
        lp = response_logprobs(response_logits(policy, qr, pad, T), resp, cfg.ppo.temperature, "on")
        rlp = response_logprobs(response_logits(ref, qr, pad, T), resp, cfg.ppo.temperature, "on")
        keep = torch.arange(resp.size(1), device=resp.device)[None, :] <= ops.first_true_indices(post == eos)[:, None]
        total += float(((lp - rlp) * keep).sum())
        n += q.size(0)
    return total / max(n, 1)


def _preflight(cfg: Config, out_dir: Path, cache: Path, stop_after: str, track: bool) -> tuple[Config, object]:
    """What can be checked without compute, before anything is written: the output and cache paths, wandb when
    tracking, DeepSpeed for ppo.frozen_offload, the base models' directories and, for the public task, the judge's
    key, the tokenizer and the datasets' schemas (``open_sources``), and the launched process count. → (the RM's
    config, the sources)."""
    check_writable_dir(out_dir, "--out")
    check_writable_dir(cache, "--cache")
    if track:  # fail before any compute, not after training, when wandb is missing
        require_wandb()
    if cfg.ppo.frozen_offload and stop_after == "ppo" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "ppo.frozen_offload=true (the paper-6.9b preset) needs DeepSpeed: pip install deepspeed and "
            "launch on GPUs with `accelerate launch`, or pass --set ppo.frozen_offload=false"
        )
    check_model_source(cfg.model.name)
    rm_cfg = cfg.reward_model_config()  # the policy's own config unless reward.model names another model
    if rm_cfg is not cfg:
        check_model_source(rm_cfg.model.name)
    sources = open_sources(cfg, cache) if cfg.task.name != "tldr-synth" else None
    D = dist()
    if D.world != cfg.processes:
        raise ConfigError(
            f"processes={cfg.processes} in the config but launched with {D.world} processes: set --set "
            f"processes={D.world} "
            f"(and micro-batches so that batch = micro_batch × grad_accum × processes)"
        )
    return rm_cfg, sources


def _copy_upstream_logs(out_dir: Path, sft_path: Path, rm_path: Path) -> None:
    """Append the SFT and RM stages' metrics and the SFT samples to the run's files."""
    for src in (sft_path, rm_path):
        for row in read_jsonl(src / "metrics.jsonl"):
            append_jsonl(out_dir / "metrics.jsonl", row)
    for row in read_jsonl(sft_path / "samples.jsonl"):
        append_jsonl(out_dir / "samples.jsonl", row)


def _summary_fields(sft_eval: dict, rm_eval: dict, agg: dict, kl: float, sanity: dict) -> dict:
    """summary.json's sft.*, rm.*, ppo.* and sanity.* fields (non-finite sanity figures written as null)."""
    return {
        "sft.rouge1": sft_eval["rouge1"],
        "sft.rouge2": sft_eval["rouge2"],
        "sft.rouge_l": sft_eval["rouge_l"],
        "sft.win_rate": sft_eval["win_rate"],
        "sft.win_rate_ci": sft_eval["win_rate_ci"],
        "sft.mean_length": sft_eval["mean_length"],
        "sft.eos_rate": sft_eval["eos_rate"],
        "sft.gold_score": sft_eval["gold_score"],
        "sft.post_swap_gap": sft_eval["post_swap_gap"],
        "sft.fact_accuracy": sft_eval.get("fact_accuracy"),
        "rm.accuracy": rm_eval["accuracy"],
        "rm.accuracy_gold": rm_eval.get("accuracy_gold"),
        "rm.fact_check_accuracy": rm_eval.get("fact_check_accuracy"),
        "rm.fact_check_sft_likelihood": rm_eval.get("fact_check_sft_likelihood"),
        "rm.accuracy_valid1": rm_eval["accuracy_valid1"],
        "rm.accuracy_valid2": rm_eval["accuracy_valid2"],
        "rm.reward_bias": rm_eval["reward_bias"],
        "ppo.win_rate": agg["win_rate"],
        "ppo.win_rate_ci": agg["win_rate_ci"],
        "ppo.kl": kl,
        "ppo.mean_length": agg["mean_length"],
        "ppo.eos_rate": agg["eos_rate"],
        "ppo.proxy_reward": agg["proxy_reward"],
        "ppo.gold_score": agg["gold_score"],
        "ppo.rouge_l": agg["rouge_l"],
        "ppo.fact_accuracy": agg.get("fact_accuracy"),
        "ppo.repetition_rate": agg["repetition_rate"],
        "ppo.distinct_2": agg["distinct_2"],
        **{f"sanity.{k}": (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in sanity.items()},
    }


def _optimize_policy(
    cfg: Config,
    data,
    sft_path: Path,
    rm_path: Path,
    norm: RewardNormalization,
    train_reward: TrainingReward,
    out_dir: Path,
    evaluate,
) -> dict:
    """Train the policy with cfg.algorithm; ``evaluate(policy) -> (aggregates, rows)`` is the online loops'
    periodic evaluation. Returns the stage's result (``train_ppo``'s keys)."""

    def periodic(policy, update):
        agg, _ = evaluate(policy)
        return agg

    train_queries = as_tensor(data.sft["train"]["query_token"])
    if cfg.algorithm == "dpo":  # offline, on the comparisons; the RM only scores its samples below
        return train_dpo(cfg, sft_path / "model", data.pref, data.tokenizer, out_dir)
    train = train_ppo if cfg.algorithm == "ppo" else train_critic_free
    return train(
        cfg, sft_path / "model", rm_path / "model", norm, train_queries, data.tokenizer, out_dir, periodic, train_reward
    )


def run_pipeline(
    cfg: Config,
    out_dir: Path,
    cache: Path | None = None,
    command: str | None = None,
    stop_after: str = "ppo",
    track: bool = False,
    overwrite: bool = False,
) -> dict:
    """Run the stages for ``cfg`` into ``out_dir`` (up to ``stop_after``); returns (and writes) summary.json.

    The main process holds ``out_dir``'s run lock (the study runner's) from before provenance to DONE, so a second
    run on the same directory is refused instead of interleaving its files with this one's; a finished run (DONE)
    is replaced only with ``overwrite``."""
    out_dir, cache = Path(out_dir), Path(cache or default_cache())
    # 0. inputs that can be checked without compute, before anything is written
    rm_cfg, sources = _preflight(cfg, out_dir, cache, stop_after, track)
    with run_dir_lock(out_dir, overwrite) if dist().is_main else contextlib.nullcontext():
        return _run_locked(cfg, rm_cfg, out_dir, cache, command, stop_after, track, sources)


def _start_provenance(cfg: Config, out_dir: Path, command: str | None) -> None:
    """Clear a previous attempt's outputs and write provenance, so a run directory never mixes two runs' files."""
    for stale in ("metrics.jsonl", "samples.jsonl", "DONE", "error.txt"):
        (out_dir / stale).unlink(missing_ok=True)
    write_provenance(
        out_dir,
        {
            **cfg.to_dict(),
            "hash": cfg.hash,
            "stage_hashes": {s: cfg.stage_hash(s) for s in ("base", "sft", "rm", "ppo")},
        },
        cfg.details.as_dict(),
        command,
    )


def _run_data(cfg: Config, out_dir: Path, cache: Path, sources: Sources | None, is_main: bool) -> tuple[Data, EvalSet]:
    """The run's data and evaluation set, loaded once and shared by every stage of this run."""
    data = load_data(cfg, cache, sources)
    if is_main and cfg.task.comparisons_source.startswith("tldr-synth:"):  # the labeller's agreement, for the report
        labels = synth_relabelled(data.data_dir, cfg.task.comparisons_source.split(":", 1)[1], cache)
        atomic_write_json(out_dir / "label.json", read_json(labels / "label.json"))
    es = eval_set_from(data.sft["validation"], cfg.task.max_eval)
    return data, es


def _reward_model(cfg: Config, rm_cfg: Config, data: Data, sft_path: Path, cache: Path, es: EvalSet) -> Path:
    """The reward model, trained from this run's SFT model or, with reward.model, from that model's own SFT."""
    if rm_cfg is not cfg:  # reward.model: the RM gets its own base and SFT (shared with runs of that model)
        rm_sft_path = sft_stage(rm_cfg, data, base_model(rm_cfg, data, cache), cache, es)
        return rm_stage(rm_cfg, data, rm_sft_path, cache)
    return rm_stage(cfg, data, sft_path, cache)


def _evaluate_final_policy(cfg: Config, data: Data, es: EvalSet, res: dict, evaluate, out_dir: Path) -> tuple:
    """Score the trained policy on the evaluation set (its samples logged) and measure its KL to the reference."""
    policy = res["actor"].lm()
    agg, rows = evaluate(policy)
    for r in rows:
        append_jsonl(out_dir / "samples.jsonl", {"stage": "ppo", **r})
    kl = policy_kl(cfg, policy, res["ref_policy"], es, data.tokenizer)
    return agg, kl


def _run_locked(
    cfg: Config, rm_cfg: Config, out_dir: Path, cache: Path, command: str | None, stop_after: str, track: bool, sources
) -> dict:
    t_start = time.time()
    # 1. provenance before any compute
    D = dist()
    if D.is_main:
        _start_provenance(cfg, out_dir, command)
    seed_everything(cfg.seed, D.rank)
    # 2. data
    data, es = _run_data(cfg, out_dir, cache, sources, D.is_main)
    # 3.–5. upstream stages (reused across variants that share them)
    base = base_model(cfg, data, cache)
    sft_path = sft_stage(cfg, data, base, cache, es)
    if stop_after == "sft":
        if not D.is_main:
            return {}
        return _partial(out_dir, "sft", read_json(sft_path / "eval.json"), {"sft": sft_path})
    rm_path = _reward_model(cfg, rm_cfg, data, sft_path, cache, es)
    if stop_after == "rm":
        if not D.is_main:
            return {}
        return _partial(out_dir, "rm", read_json(rm_path / "eval.json"), {"sft": sft_path, "rm": rm_path})
    sft_eval, rm_eval = read_json(sft_path / "eval.json"), read_json(rm_path / "eval.json")
    if D.is_main:  # the upstream stages' logs and samples, as if they had run here
        _copy_upstream_logs(out_dir, sft_path, rm_path)
    # 6. policy optimization (cfg.algorithm)
    norm = RewardNormalization(bias=rm_eval["reward_bias"], gain=rm_eval["reward_gain"])
    train_reward, reward = reward_for(cfg, data, rm_path, norm)
    evaluate = _eval_fn(cfg, data, es, reward)
    t_ppo = time.time()
    res = _optimize_policy(cfg, data, sft_path, rm_path, norm, train_reward, out_dir, evaluate)
    if not D.is_main:  # evaluation and the summary are written once
        return {}
    agg, kl = _evaluate_final_policy(cfg, data, es, res, evaluate, out_dir)
    ppo_wall = time.time() - t_ppo
    sanity = {
        **res["sanity"],
        "rm_padding_max_diff": rm_eval["padding_invariance_max_diff"],
        "rm_padding_ok": rm_eval["padding_invariance_max_diff"] < 1e-3,
    }
    eval_out = {
        "sft": sft_eval,
        "rm": rm_eval,
        "ppo": {**agg, "kl": kl, "evals": res["evals"], "wall_time_s": ppo_wall},
        "sanity": sanity,
    }
    atomic_write_json(out_dir / "eval.json", eval_out)
    summary = {
        **_summary_fields(sft_eval, rm_eval, agg, kl, sanity),
        **res.get("summary", {}),
        "params": res["params"],
        "model": cfg.model.name,
        "reward_model": rm_cfg.model.name,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "algorithm": cfg.algorithm,
        "wall_time_s": time.time() - t_start,
        "ppo_wall_time_s": ppo_wall,
        "artifacts": {"sft": str(sft_path), "rm": str(rm_path)},
    }
    atomic_write_json(out_dir / "summary.json", summary)
    if track:
        mirror_to_wandb(out_dir, cfg)
    mark_done(out_dir, {"hash": cfg.hash}, RUN_OUTPUTS)
    return summary


def _partial(out_dir: Path, stage: str, result: dict, artifacts: dict[str, Path]) -> dict:
    """A stage command's result: the stage evaluation flattened into summary.json keys, upstream logs copied."""
    summary = {f"{stage}.{k}": v for k, v in result.items() if not isinstance(v, dict)}
    summary["artifacts"] = {k: str(v) for k, v in artifacts.items()}
    for path in artifacts.values():
        for name in ("metrics.jsonl", "samples.jsonl"):
            for row in read_jsonl(path / name):
                append_jsonl(out_dir / name, row)
    atomic_write_json(out_dir / "summary.json", summary)
    mark_done(out_dir, files=RUN_OUTPUTS)
    return summary

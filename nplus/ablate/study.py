"""Study files: declarative ablations (TOML, data only) and their expansion into run specs.

A study names a base preset, a committed seed list, optional model sizes and variants; each variant is a small
diff of the baseline (details, a framework-emulation preset, and hyperparameters only where the study says
so). ``load_study`` validates everything before anything runs, and reports the first problem as one
``StudyError`` naming the file, the key and the valid choices. ``expand`` turns a study into one ``RunSpec`` per
variant × size × seed, each with its resolved ``Config`` and run directory
``<out>/<variant>[/size=<s>]/seed=<n>/``.

    name = "demo"                 # the study's name (default output: runs/<name>)
    preset = "demo"               # base preset (nplus.presets.PRESETS)
    seeds = "default"             # seeds/<name>.txt, committed before results are seen
    sizes = ["nano", "tiny"]      # optional: model-ladder rungs; a size sets model.name
    baseline = "baseline"         # the variant every other is compared with (added if not listed)
    one_at_a_time = true          # optional: one variant per alternative of every detail, "<detail>=<value>"
    aa = true                     # optional: an A/A arm "aa", the baseline with fresh training seeds (a check)
    [knob]                        # optional: variants that are settings of one knob, and the trend to test
    name = "verifier"             #   what the knob is (the report's axis)
    variants = ["rm=micro", "rm=tiny", "rm=gold"]   # its settings, in increasing order (not the baseline)
    metric = "ppo.win_rate"       #   the paired difference (variant − baseline) tested along the knob
    hypothesis = "rises"          #   rises | falls: the report says whether the data show it
    [hparams]                     # optional: hyperparameter overrides for every variant
    "ppo.total_episodes" = 2048
    [[variants]]
    name = "no-eos-penalty"
    details = { missing_eos_penalty = "off" }
    framework = "trl-ppo"         # optional: a framework-emulation preset, applied before `details`
    hparams = { "ppo.kl_coef" = 0.01 } # optional: this variant's hyperparameter overrides
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from nplus.config import Config, ConfigError, apply_overrides
from nplus.details import REGISTRY, DetailError
from nplus.frameworks import FRAMEWORKS, framework_details
from nplus.metrics_doc import SUMMARY_METRICS
from nplus.presets import PRESETS, preset
from nplus.rundir import dir_name_problem
from nplus.stats import AA_SEED_OFFSET, AA_VARIANT

STUDY_KEYS = (
    "name",
    "description",
    "preset",
    "seeds",
    "sizes",
    "baseline",
    "one_at_a_time",
    "aa",
    "knob",
    "hparams",
    "variants",
)
KNOB_KEYS = ("name", "variants", "metric", "hypothesis")
KNOB_HYPOTHESES = ("rises", "falls")
VARIANT_KEYS = ("name", "details", "framework", "hparams")
# Where committed seed lists live: next to the study's folder (ablations/../seeds), else the repository's.
_REPO_SEEDS = Path(__file__).resolve().parents[2] / "seeds"


class StudyError(ValueError):
    """An invalid study file: names the file, the key and the valid choices."""


@dataclass(frozen=True)
class Variant:
    """One arm of a study: detail flips, an optional framework preset and hyperparameter overrides."""

    name: str
    details: dict[str, str] = field(default_factory=dict)
    framework: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    seed_offset: int = 0
    """Added to the label seed to get the training seed: AA_SEED_OFFSET for the A/A arm, 0 for every other."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Study:
    """A validated study; ``variants`` already includes the baseline and one-at-a-time expansions."""

    path: Path
    name: str
    preset: str
    seeds_name: str
    seeds: tuple[int, ...]
    sizes: tuple[str, ...]
    baseline: str
    hparams: dict[str, Any]
    variants: tuple[Variant, ...]
    description: str = ""
    knob: dict[str, Any] = field(default_factory=dict)
    """Empty, or {name, variants, metric, hypothesis}: variants that set one knob, in order (see the module doc)."""

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "description": self.description,
            "preset": self.preset,
            "seeds_name": self.seeds_name,
            "seeds": list(self.seeds),
            "sizes": list(self.sizes),
            "baseline": self.baseline,
            "hparams": self.hparams,
            "variants": [v.as_dict() for v in self.variants],
            **({"knob": self.knob} if self.knob else {}),
        }


@dataclass(frozen=True)
class RunSpec:
    """One PPO-level run: a variant at one size and seed, its resolved config and its run directory."""

    variant: str
    size: str | None
    seed: int
    config: Config
    run_dir: Path

    @property
    def label(self) -> str:
        size = f" size={self.size}" if self.size else ""
        return f"{self.variant}{size} seed={self.seed}"

    def stage_hashes(self) -> dict[str, str]:
        return {s: self.config.stage_hash(s) for s in ("base", "sft", "rm", "ppo")}

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "size": self.size,
            "seed": self.seed,
            "run_dir": str(self.run_dir),
            "hash": self.config.hash,
            "stage_hashes": self.stage_hashes(),
            "details": self.config.details.diff(),
        }


# ---- loading and validation ----------------------------------------------------------------------------------


def _fail(path: Path, key: str, message: str) -> StudyError:
    return StudyError(f"{path}: {key}: {message}")


def _check_keys(path: Path, where: str, table: dict, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise _fail(path, f"{where}{unknown[0]}", f"unknown key; valid keys: {', '.join(allowed)}")


def _typed(path: Path, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _fail(path, key, f"expected {what}, got {value!r}")
    return value


def seeds_file(study_path: Path, name: str) -> Path:
    """``seeds/<name>.txt`` beside the study's folder, else the repository's seeds/ folder."""
    for folder in (Path(study_path).resolve().parent.parent / "seeds", _REPO_SEEDS):
        if (folder / f"{name}.txt").is_file():
            return folder / f"{name}.txt"
    return _REPO_SEEDS / f"{name}.txt"


def read_seeds(path: Path) -> tuple[int, ...]:
    """One integer per line; blank lines and ``#`` comments ignored; duplicates are an error."""
    seeds = [int(line.split("#")[0]) for line in path.read_text().splitlines() if line.split("#")[0].strip()]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"{path}: seeds must be a non-empty list without duplicates")
    return tuple(seeds)


def _available_seed_lists(study_path: Path) -> list[str]:
    folders = {Path(study_path).resolve().parent.parent / "seeds", _REPO_SEEDS}
    return sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.txt")})


def _knob(path: Path, raw: Any, names: list[str], baseline: str) -> dict[str, Any]:
    _typed(path, "knob", raw, dict, "a table with keys " + ", ".join(KNOB_KEYS))
    _check_keys(path, "knob.", raw, KNOB_KEYS)
    for key in KNOB_KEYS:
        if key not in raw:
            raise _fail(path, f"knob.{key}", f"missing (required keys: {', '.join(KNOB_KEYS)})")
    label = _typed(path, "knob.name", raw["name"], str, "a string")
    settings = _typed(path, "knob.variants", raw["variants"], list, "a list of variant names in the knob's order")
    arms = [n for n in names if n != baseline]
    for v in settings:
        if v not in arms:
            raise _fail(
                path, "knob.variants", f"{v!r} is not a variant other than the baseline; valid: {', '.join(arms)}"
            )
    if len(settings) < 2 or len(set(settings)) != len(settings):
        raise _fail(path, "knob.variants", "needs two or more distinct variants (a trend needs two settings)")
    metric = _typed(path, "knob.metric", raw["metric"], str, "a summary metric name")
    if metric not in SUMMARY_METRICS:
        raise _fail(path, "knob.metric", f"unknown summary metric {metric!r}; valid: {', '.join(SUMMARY_METRICS)}")
    if raw["hypothesis"] not in KNOB_HYPOTHESES:
        raise _fail(path, "knob.hypothesis", f"{raw['hypothesis']!r}; valid choices: {', '.join(KNOB_HYPOTHESES)}")
    return {"name": label, "variants": list(settings), "metric": metric, "hypothesis": raw["hypothesis"]}


def _short(name: str) -> str:
    return repr(name if len(name) <= 60 else name[:40] + "…")


def _variant(path: Path, i: int, raw: Any) -> Variant:
    where = f"variants[{i}]"
    _typed(path, where, raw, dict, "a table")
    _check_keys(path, f"{where}.", raw, VARIANT_KEYS)
    if "name" not in raw:
        raise _fail(path, f"{where}.name", "missing (every variant needs a name)")
    name = _typed(path, f"{where}.name", raw["name"], str, "a string")
    problem = dir_name_problem(name) or (
        "it starts with size= or seed= (the runner's own directory levels)"
        if name.startswith(("size=", "seed="))
        else None
    )
    if problem:
        raise _fail(path, f"{where}.name", f"{_short(name)} cannot be a directory name: {problem}")
    if name == AA_VARIANT:
        raise _fail(
            path, f"{where}.name", f"{name!r} is the A/A arm's name; set `aa = true` for it, or rename this variant"
        )
    details = _typed(path, f"{where}.details", raw.get("details", {}), dict, "a table of detail = value")
    for k, v in details.items():
        if k not in REGISTRY:
            raise _fail(path, f"{where}.details.{k}", f"unknown detail; valid details: {', '.join(REGISTRY)}")
        if str(v) not in REGISTRY[k].choices:
            raise _fail(
                path, f"{where}.details.{k}", f"invalid value {v!r}; valid choices: {', '.join(REGISTRY[k].choices)}"
            )
    framework = raw.get("framework")
    if framework is not None and framework not in FRAMEWORKS:
        raise _fail(
            path, f"{where}.framework", f"unknown framework {framework!r}; valid frameworks: {', '.join(FRAMEWORKS)}"
        )
    hparams = _typed(path, f"{where}.hparams", raw.get("hparams", {}), dict, "a table of dotted.path = value")
    return Variant(name, {k: str(v) for k, v in details.items()}, framework, dict(hparams))


def _one_at_a_time(base: Variant, algorithm: str, values: dict[str, str]) -> list[Variant]:
    """One variant per alternative of every detail that applies to the baseline's algorithm, relative to the
    baseline's own resolved values ``values`` (preset, framework and its details: the demo preset's
    learning_rate = per_stage flips to single, not to itself)."""
    out = []
    for name, detail in REGISTRY.items():
        if not detail.applies_to(algorithm):
            continue
        for choice in detail.choices:
            if choice != values[name]:
                out.append(
                    Variant(f"{name}={choice}", {**base.details, name: choice}, base.framework, dict(base.hparams))
                )
    return out


def _read_study_toml(path: Path) -> dict:
    """The study file's top-level table, with unknown and missing required keys refused before any value is read."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path}: not valid TOML: {e}") from None
    _check_keys(path, "", raw, STUDY_KEYS)
    for key in ("name", "preset", "seeds"):
        if key not in raw:
            raise _fail(path, key, "missing (required keys: name, preset, seeds)")
    return raw


def _study_seeds(path: Path, raw: dict) -> tuple[str, tuple[int, ...]]:
    """The seed list the study names (seeds/<name>.txt, found by seeds_file) and its seeds, read and checked."""
    seeds_name = _typed(path, "seeds", raw["seeds"], str, 'the name of a seed list in seeds/ (e.g. "default")')
    seed_path = seeds_file(path, seeds_name)
    if not seed_path.is_file():
        raise _fail(
            path, "seeds", f"no seed list {seeds_name!r}; valid seed lists: {', '.join(_available_seed_lists(path))}"
        )
    try:
        seeds = read_seeds(seed_path)
    except ValueError as e:
        raise _fail(path, "seeds", str(e)) from None
    return seeds_name, seeds


def _study_sizes(path: Path, raw: dict, base_preset: str) -> tuple:
    """The study's model sizes, checked against the paper presets (preset "paper") or the model ladder."""
    sizes = tuple(_typed(path, "sizes", raw.get("sizes", []), list, "a list of model sizes"))
    if base_preset == "paper":
        # the published grid: `preset = "paper"` with sizes from the paper presets (paper-1b, paper-2.8b, ...)
        valid_sizes = tuple(k[len("paper-") :] for k in PRESETS if k.startswith("paper-"))
        if not sizes:
            raise _fail(path, "sizes", f"preset 'paper' needs sizes; valid sizes: {', '.join(valid_sizes)}")
    elif sizes:
        from nplus.models import LADDER  # imports torch + transformers: only for studies that name sizes

        valid_sizes = tuple(LADDER)
    for s in sizes:
        if s not in valid_sizes:
            raise _fail(path, "sizes", f"unknown size {s!r}; valid sizes: {', '.join(valid_sizes)}")
    if len(set(sizes)) != len(sizes):
        raise _fail(path, "sizes", "duplicate sizes")
    return sizes


def _check_variants_resolve(path: Path, study: Study, sizes: tuple, seeds: tuple[int, ...]) -> None:
    """Resolve every variant at every size once, so a bad override fails at load time rather than mid-study."""
    for v in study.variants:
        for size in sizes or (None,):
            try:
                resolve(study, v, size, seeds[0])
            except (ConfigError, DetailError, ValueError) as e:
                raise _fail(path, f"variant {v.name!r}" + (f" size={size}" if size else ""), str(e)) from None


def load_study(path: Path | str) -> Study:
    """Read and validate a study file; every variant's config is resolved once so bad overrides fail here."""
    path = Path(path)
    raw = _read_study_toml(path)
    name = _typed(path, "name", raw["name"], str, "a string")
    if problem := dir_name_problem(name):  # the default output runs/<name> and the report's reports/<name>
        raise _fail(path, "name", f"{_short(name)} cannot be a directory name: {problem}")
    base_preset = _typed(path, "preset", raw["preset"], str, "a string")
    if base_preset not in PRESETS and base_preset != "paper":
        raise _fail(
            path, "preset", f"unknown preset {base_preset!r}; valid presets: paper (with sizes), {', '.join(PRESETS)}"
        )
    seeds_name, seeds = _study_seeds(path, raw)
    sizes = _study_sizes(path, raw, base_preset)
    baseline = _typed(path, "baseline", raw.get("baseline", "baseline"), str, "a variant name")
    hparams = _typed(path, "hparams", raw.get("hparams", {}), dict, "a table of dotted.path = value")
    oaat = _typed(path, "one_at_a_time", raw.get("one_at_a_time", False), bool, "true or false")
    aa = _typed(path, "aa", raw.get("aa", False), bool, "true or false")
    variants = [
        _variant(path, i, v)
        for i, v in enumerate(_typed(path, "variants", raw.get("variants", []), list, "an array of tables"))
    ]
    names = [v.name for v in variants]
    if baseline not in names:
        if baseline != "baseline":
            raise _fail(path, "baseline", f"no variant named {baseline!r}; variants: {', '.join(names) or '(none)'}")
        variants.insert(0, Variant("baseline"))
    base = next(v for v in variants if v.name == baseline)
    if oaat:
        prelim = Study(path, name, base_preset, seeds_name, seeds, sizes, baseline, dict(hparams), tuple(variants))
        try:
            values = resolve(prelim, base, sizes[0] if sizes else None, seeds[0]).details.as_dict()
        except (ConfigError, DetailError, ValueError) as e:
            raise _fail(path, f"variant {base.name!r}", str(e)) from None
        variants += _one_at_a_time(base, str({**hparams, **base.hparams}.get("algorithm", "ppo")), values)
    if aa:
        variants.append(dataclasses.replace(base, name=AA_VARIANT, seed_offset=AA_SEED_OFFSET))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(path, "variants", f"duplicate variant names: {', '.join(dupes)}")
    study = Study(
        path,
        name,
        base_preset,
        seeds_name,
        seeds,
        sizes,
        baseline,
        dict(hparams),
        tuple(variants),
        _typed(path, "description", raw.get("description", ""), str, "a string"),
        _knob(path, raw["knob"], names, baseline) if "knob" in raw else {},
    )
    _check_variants_resolve(path, study, sizes, seeds)
    return study


# ---- expansion -----------------------------------------------------------------------------------------------


def resolve(study: Study, variant: Variant, size: str | None, seed: int) -> Config:
    """preset(seed + the variant's seed offset) → framework details → variant details → size, study hparams and
    variant hparams (hparams and details are separate fields, so the order of the two kinds does not matter)."""
    seed += variant.seed_offset
    if study.preset == "paper":  # a paper size is a whole preset (model, batch split, processes)
        cfg, hparams = preset(f"paper-{size}", seed), dict(study.hparams)
    else:
        cfg = preset(study.preset, seed)
        hparams = {**({"model.name": size} if size else {}), **study.hparams}
    if variant.framework:
        cfg = apply_overrides(cfg, details=framework_details(variant.framework))
    # the study's and the variant's hparams in one call with the variant's details, so that a rate the study sets
    # for a variant that turns on details.learning_rate=per_stage is judged (effective or not) where it applies
    return apply_overrides(cfg, hparams={**hparams, **variant.hparams}, details=variant.details)


def run_dir(out: Path, variant: str, size: str | None, seed: int) -> Path:
    return Path(out) / variant / (f"size={size}" if size else "") / f"seed={seed}"


def expand(study: Study, out: Path | str | None = None) -> list[RunSpec]:
    """Variant × size × seed, baseline first (the order the local runner prefers for building shared artifacts)."""
    out = Path(out) if out is not None else Path("runs") / study.name
    ordered = sorted(study.variants, key=lambda v: v.name != study.baseline)
    return [
        RunSpec(v.name, size, seed, resolve(study, v, size, seed), run_dir(out, v.name, size, seed))
        for v in ordered
        for size in (study.sizes or (None,))
        for seed in study.seeds
    ]

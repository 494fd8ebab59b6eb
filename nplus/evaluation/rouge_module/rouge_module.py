"""An offline ``evaluate`` metric for ROUGE, loadable with ``evaluate.load("<path>/rouge_module")``.

Same inputs and outputs as the hub's ``rouge`` module (rouge1, rouge2, rougeL, rougeLsum; one reference or a
list of references per prediction; ``use_aggregator``, ``use_stemmer``, ``tokenizer``), built on Google's
``rouge-score`` without any network access. One deliberate difference: with ``use_aggregator=True`` it
returns the exact mean F-measure, where the hub module returns the median of an unseeded bootstrap, so the
numbers are reproducible. Self-contained (``evaluate`` copies this file into its module cache), so it does
not import nplus.
"""

import datasets
import evaluate
import numpy as np
from rouge_score import rouge_scorer

_DESCRIPTION = "ROUGE-N / ROUGE-L / ROUGE-Lsum F-measures from rouge-score, usable offline."

_CITATION = """\
@inproceedings{lin-2004-rouge,
  title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
  author = "Lin, Chin-Yew",
  booktitle = "Text Summarization Branches Out",
  year = "2004",
  publisher = "Association for Computational Linguistics",
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of summaries, one string each.
    references: list of references, a string or a list of strings each (the best-matching one counts).
    rouge_types: subset of ["rouge1", "rouge2", "rougeL", "rougeLsum"] (default: all four).
    use_aggregator: True returns the mean F-measure per type; False the per-example list.
    use_stemmer: Porter-stem words before matching (default False, like the hub module).
    tokenizer: optional object with a ``tokenize(text) -> list[str]`` method, or a callable.
Returns:
    {"rouge1": float | list, "rouge2": ..., "rougeL": ..., "rougeLsum": ...}
"""


class _CallableTokenizer:
    """Adapts a plain function to the ``tokenize`` method rouge-score expects."""

    def __init__(self, fn):
        self.fn = fn

    def tokenize(self, text):
        return self.fn(text)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeModule(evaluate.Metric):
    """ROUGE F-measures; see the module docstring."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(
        self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False, tokenizer=None
    ):
        rouge_types = list(rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"])
        if tokenizer is not None and not hasattr(tokenizer, "tokenize"):
            tokenizer = _CallableTokenizer(tokenizer)
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer, tokenizer=tokenizer)
        per_type = {t: [] for t in rouge_types}
        for pred, ref in zip(predictions, references):
            # score_multi keeps the best reference; the target comes first in rouge-score's signature
            score = scorer.score_multi(ref, pred) if isinstance(ref, list) else scorer.score(ref, pred)
            for t in rouge_types:
                per_type[t].append(float(score[t].fmeasure))
        if use_aggregator:
            return {t: float(np.mean(v)) if v else 0.0 for t, v in per_type.items()}
        return per_type

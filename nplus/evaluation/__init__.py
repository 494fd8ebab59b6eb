"""Evaluation: judges (gold / openai / hf) and their reply parser, win rates with intervals, length control,
ROUGE, reward-model accuracy and calibration, and the ``nplus eval`` command.

Modules: ``judges`` (Judge interface, protocol against the reference), ``openai_judge`` (the OpenAI API
judge), ``parser`` (``parse_choice``), ``metrics`` (the ``METRICS`` table and the estimators), ``rouge``,
``rouge_module`` (an offline ``evaluate`` metric), ``evaluate_cmd`` (``EvalConfig``, ``run_eval``). See
docs/evaluation.md.
"""

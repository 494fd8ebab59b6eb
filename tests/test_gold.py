"""The gold judge: documented components on hand-made examples, preferences on generated data, speed."""

import json
import random
import time

import numpy as np
import pytest

from nplus.tasks import synth
from nplus.tasks.gold import COMPONENTS, GoldJudge

POST = (
    "My boyfriend (26M) and I (24F) have been together for 2 years.\nHe cheated on me.\n"
    "I feel so hurt right now.\nShould I break up with him?"
)
FACTS = {
    "event": "cheated",
    "relation": "boyfriend",
    "ask": "break_up",
    "duration": "2 years",
    "feeling": "hurt",
    "narrator": "24F",
    "counterpart": "26M",
}
# The same story without an ask, a duration or a feeling.
BARE_POST = "My girlfriend (30F) and I (31M) live together.\nShe forgot my birthday."
BARE_FACTS = {
    "event": "forgot_birthday",
    "relation": "girlfriend",
    "ask": None,
    "duration": None,
    "feeling": None,
    "narrator": "31M",
    "counterpart": "30F",
}
FULL = "My bf (26M) of 2 years cheated on me. I (24F) feel hurt. Should I break up with him?"  # 19 words


@pytest.fixture(scope="module")
def judge() -> GoldJudge:
    return GoldJudge({POST: FACTS, BARE_POST: BARE_FACTS})


@pytest.fixture(scope="module")
def corpus() -> tuple[list[synth.Post], GoldJudge]:
    posts = [p for split in synth.build_posts(0, "small").values() for p in split]
    return posts, GoldJudge({p.text: p.facts for p in posts})


def test_full_coverage(judge):
    b = judge.breakdown(POST, FULL)
    assert list(b) == [*COMPONENTS, "total"]
    assert b["coverage"] == pytest.approx(10.0)
    assert b["length"] == pytest.approx(-0.02 * 19)
    assert all(b[k] == 0 for k in ("wrong", "invented", "irrelevant", "repetition", "unfinished"))
    assert b["total"] == pytest.approx(sum(b[k] for k in COMPONENTS)) == pytest.approx(judge.score(POST, FULL))


def test_missing_fact_loses_its_weight(judge):
    def coverage(summary):
        return judge.breakdown(POST, summary)["coverage"]

    assert coverage("My bf (26M) of 2 years cheated on me. I (24F) feel hurt.") == pytest.approx(8.0)  # ask
    assert coverage("My bf (26M) cheated on me. I (24F) feel hurt. Should I break up with him?") == pytest.approx(9.0)
    assert coverage("My bf of 2 years cheated on me. I feel hurt. Should I break up with him?") == pytest.approx(9.0)


def test_ages_in_any_written_form(judge):
    assert judge.breakdown(POST, "Me [24 F] and my boyfriend [26 M]")["coverage"] == pytest.approx(10 * 3 / 10)


def test_wrong_values(judge):
    wrong_relation = judge.breakdown(POST, FULL.replace("bf", "husband"))
    assert wrong_relation["wrong"] == -3 and wrong_relation["coverage"] == pytest.approx(8.0)
    wrong_duration = judge.breakdown(POST, FULL.replace("2 years", "3 months"))
    assert wrong_duration["wrong"] == -3 and wrong_duration["coverage"] == pytest.approx(9.0)
    wrong_age = judge.breakdown(POST, FULL.replace("24F", "25F"))
    assert wrong_age["wrong"] == -3 and wrong_age["coverage"] == pytest.approx(9.5)
    both_feelings = judge.breakdown(POST, FULL.replace("feel hurt", "feel hurt and angry"))
    assert both_feelings["wrong"] == -3 and both_feelings["coverage"] == pytest.approx(10.0)


def test_invented_slots(judge):
    b = judge.breakdown(BARE_POST, "My gf (30F) forgot my birthday. I'm 31M, together 2 years. Should I forgive her?")
    assert b["invented"] == -4  # a duration and an ask the post does not have
    assert b["coverage"] == pytest.approx(10.0)  # event 3 + relation 2 + ages 1 out of 6, scaled to 10


def test_irrelevant_content(judge):
    assert judge.breakdown(POST, FULL + " I have a dog named Max.")["irrelevant"] == -2  # two markers
    assert judge.breakdown(POST, "long story short, " + FULL + " idk.")["irrelevant"] == -1  # two fillers


def test_length_budget(judge):
    forty = " ".join(["word"] * 40)
    assert judge.breakdown(POST, forty)["length"] == pytest.approx(-0.02 * 40 - 0.15 * 10)


def test_repetition(judge):
    assert judge.breakdown(POST, "he cheated on me he cheated on me")["repetition"] == -1.0  # 2 repeated trigrams
    assert judge.breakdown(POST, " ".join(["cheated on me"] * 20))["repetition"] == -5.0  # capped at 10


def test_unfinished_is_a_fixed_penalty(judge):
    assert judge.score(POST, FULL, finished=False) == pytest.approx(judge.score(POST, FULL) - 2.0)
    assert judge.compare(POST, FULL, FULL, a_finished=False).choice == "B"


def test_leading_space_does_not_matter(judge):
    assert judge.score(POST, " " + FULL) == judge.score(POST, FULL)


def test_compare_reply_and_ties(judge):
    j = judge.compare(POST, FULL, "He cheated on me.")
    assert j.choice == "A" and j.score_a > j.score_b
    assert j.raw.startswith("Comparison: ") and j.raw.splitlines()[-1] == "Preferred: A"
    assert judge.compare(POST, "He cheated on me.", FULL).choice == "B"
    # equal scores: a stable coin flip, about half each way across pairs
    pairs = [(f"cheated {w}{i}", f"cheated {w}{i + 1}") for w in "xyz" for i in range(100)]
    picks = [judge.compare(POST, a, b).choice for a, b in pairs]
    assert picks == [judge.compare(POST, a, b).choice for a, b in pairs]
    assert 0.4 <= picks.count("A") / len(picks) <= 0.6
    assert "tie" in judge.compare(POST, "cheated a", "cheated b").raw


def test_unknown_post_and_facts(judge):
    with pytest.raises(KeyError, match="exact text"):
        judge.score("a post the generator never wrote", FULL)
    assert judge.facts_for(POST) == FACTS


def test_from_dir(tmp_path):
    (tmp_path / "facts.jsonl").write_text(json.dumps({"id": "t3_x", "post": POST, "facts": FACTS}) + "\n")
    assert GoldJudge.from_dir(tmp_path).score(POST, FULL) == pytest.approx(10 - 0.38)
    with pytest.raises(FileNotFoundError, match="facts.jsonl"):
        GoldJudge.from_dir(tmp_path / "missing")


def test_score_batch_matches_score(judge):
    summaries = [FULL, "He cheated on me.", ""]
    flags = [True, False, True]
    expected = [judge.score(POST, s, f) for s, f in zip(summaries, flags)]
    assert judge.score_batch([POST] * 3, summaries, flags) == expected
    with pytest.raises(ValueError, match="lengths differ"):
        judge.score_batch([POST], summaries)


def test_a_complete_summary_beats_every_degraded_policy_and_so_does_the_reference_mostly(corpus):
    """The judge ranks quality: a summary with every fact beats each degraded policy (which starts from the same
    complete summary) almost always. The human-like references (most leave the question out) still beat each
    degraded policy most of the time."""
    posts, judge = corpus
    rng = random.Random(0)
    complete, human = {}, {}
    for policy in ("omit", "wrong", "verbose", "repeat", "truncated", "title", "short"):
        degraded = [" " + synth.policy_summary(p, policy, rng) for p in posts]
        full = [" " + " ".join(synth.compose_summary(p.facts, p.gender, rng, p.text)) for p in posts]
        complete[policy] = np.mean(
            [judge.compare(p.text, f, d).choice == "A" for p, f, d in zip(posts, full, degraded)]
        )
        human[policy] = np.mean(
            [judge.compare(p.text, " " + p.reference, d).choice == "A" for p, d in zip(posts, degraded)]
        )
    print("complete / reference win rate per policy:", complete, human)
    assert min(complete.values()) >= 0.9, complete
    assert min(human.values()) >= 0.7, human


def test_a_concise_complete_summary_beats_the_reference_often(corpus):
    """References are human-like, not perfect: room for a policy to win, as the paper's PPO models do."""
    posts, judge = corpus
    rng = random.Random(0)
    wins = [
        judge.compare(p.text, " ".join(synth.compose_summary(p.facts, p.gender, rng, p.text)), p.reference).choice
        == "A"
        for p in posts
    ]
    assert 0.6 <= sum(wins) / len(wins) <= 0.85


def test_finished_beats_the_same_summary_unfinished(corpus):
    posts, judge = corpus
    assert all(judge.compare(p.text, p.reference, p.reference, b_finished=False).choice == "A" for p in posts)
    assert all(judge.compare(p.text, p.reference, p.reference, a_finished=False).choice == "B" for p in posts)


def test_scoring_speed(corpus):
    posts, judge = corpus
    rng = random.Random(0)
    pairs = [(p.text, synth.policy_summary(p, rng.choice(synth.POLICIES), rng)) for p in posts] * 4
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for post, summary in pairs:
            judge.score(post, summary)
        best = max(best, len(pairs) / (time.perf_counter() - start))
    assert best >= 5000, f"{best:.0f} summaries/s"

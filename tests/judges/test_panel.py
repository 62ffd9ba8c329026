"""The judges and their known-answer check, tried the way a skeptical reviewer would.

Every expected value comes from the construction of the data, not from the code under
test: generators that are unmistakable (a fast ball, a slow ball, a stick) must give a
perfect diagonal; two generators that are one function under two names must come out as
"cannot be told apart"; a generator judged on its own pseudo-scan is, by construction,
the same distribution as its own held-out set (classifier at chance, code distance near
zero); hand-made score tables give hand-computed preferences and validations.

The models here are untrained autoencoders with fixed random weights: the distribution
judges compare a model's outputs on two samples, and any fixed function maps two samples
of one distribution to one distribution, so the construction does not need training.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.judges.autoencoder import DenseForward, build_autoencoder, encode, reconstruct
from helpers.contract import COLUMNS, judge_seed, replicate_seeds
from helpers.scan.layouts import load_sample
from helpers.judges.panel import (
    JudgePanel,
    confusion_table,
    known_answer_check,
    mixture_preferences,
    pseudo_scan,
    validate,
)
from helpers.run.pipeline import with_validation
from helpers.report.text import verdict_head

MODULE = "synthqa_judge_generators"
GENERATORS = '''
import numpy as np

def ball_fast(bvals, bvecs, n, rng):
    return np.exp(-np.asarray(bvals)[None] * rng.uniform(2.5e-3, 3.0e-3, (n, 1)))

def ball_slow(bvals, bvecs, n, rng):
    return np.exp(-np.asarray(bvals)[None] * rng.uniform(0.3e-3, 0.5e-3, (n, 1)))

def stick(bvals, bvecs, n, rng):
    v = rng.standard_normal((n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.exp(-np.asarray(bvals)[None] * 2e-3 * (v @ np.asarray(bvecs).T) ** 2)

stick_twin = stick
'''


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generators")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(GENERATORS))
    sys.path.insert(0, str(folder))
    yield {name: f"{MODULE}:{name}" for name in ("ball_fast", "ball_slow", "stick", "stick_twin")}
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def sample():
    subject = load_sample()
    subject.info.update(dataset="sample", subject="small_64D")
    return subject


def make_panel(subject, specs, *, replicates=3, n_judge=600):
    """A panel of untrained autoencoders with fixed seeds, one per (generator, replicate)."""
    models = {(name, r): build_autoencoder(subject.n_directions, seed=100 * i + r)
              for i, name in enumerate(specs) for r in range(replicates)}
    return JudgePanel(subject, models, specs, seed=0, snr=subject.snr, n_judge=n_judge)


DISTRIBUTION_METRICS = ("c2st_accuracy", "code_mmd", "error_w1")


@pytest.fixture(scope="module")
def unmistakable(sample, generators):
    specs = {n: generators[n] for n in ("ball_fast", "ball_slow", "stick")}
    panel = make_panel(sample, specs)
    return panel, known_answer_check(panel, dataset="sample", subject="small_64D")


def test_unmistakable_truths_give_a_perfect_diagonal(unmistakable):
    panel, result = unmistakable
    assert result.separability["separable"].all()  # the construction: each pair is far apart
    confusion = confusion_table(result.scores)
    for metric in DISTRIBUTION_METRICS:
        c = confusion[confusion["metric"] == metric]
        diagonal = c[c["truth"] == c["method"]]
        off = c[c["truth"] != c["method"]]
        assert (diagonal["first"] == diagonal["n"]).all() and (diagonal["n"] == 3).all(), metric
        assert (off["first"] == 0).all(), metric
        known = result.known[result.known["metric"] == metric]
        assert (known["picked"] == known["truth"]).all() and known["told_apart"].all()
    valid = result.validation.set_index("metric")["validated"]
    assert all(valid[m] for m in DISTRIBUTION_METRICS)
    # every separable pair's preference follows the mixing weight
    mix = result.mixtures[result.mixtures["metric"].isin(DISTRIBUTION_METRICS)]
    assert len(mix) == 3 * 3 and mix["monotone"].all() and mix["crosses"].all()


def test_known_answer_tables_have_the_contract_columns(unmistakable):
    _, result = unmistakable
    assert {"dataset", "subject", "judge", "metric", "truth", "picked", "truth_first", "n"} <= set(result.known.columns)
    assert list(result.judges.columns) == list(COLUMNS)
    # the real scan is judged per replicate by every distribution judge
    assert set(result.judges["metric"]) == set(DISTRIBUTION_METRICS)
    assert sorted(result.judges["replicate"].unique()) == [0, 1, 2]
    # 3 pure scans + 3 pairs x 5 weights (the pure ends reuse the pure scans' scores)
    assert result.scores["scan"].nunique() == 3 + 3 * 5


def test_a_generator_on_its_own_pseudo_scan_is_its_own_distribution(unmistakable, sample):
    """By construction T's pseudo-scan and T's held-out set are two samples of one
    distribution: the classifier is at chance (two-sided 99.9% binomial interval) and
    the code distance is tiny beside another generator's."""
    panel, result = unmistakable
    s = result.scores
    for truth in panel.methods:
        own = s[(s["scan"] == truth) & (s["method"] == truth)]
        acc = own[own["metric"] == "c2st_accuracy"]["value"]
        n_test = panel.n_judge  # half of 2 x n_judge rows held out
        lo, hi = stats.binom.interval(0.999, n_test, 0.5)
        assert ((acc >= lo / n_test) & (acc <= hi / n_test)).all(), (truth, acc.tolist())
        other = s[(s["scan"] == truth) & (s["method"] != truth) & (s["metric"] == "code_mmd")]["value"]
        assert own[own["metric"] == "code_mmd"]["value"].abs().max() < 0.1 * other.min()


def test_identical_generators_cannot_be_told_apart(sample, generators):
    specs = {n: generators[n] for n in ("stick", "stick_twin", "ball_fast")}
    panel = make_panel(sample, specs)
    result = known_answer_check(panel, dataset="sample", subject="small_64D")
    sep = result.separability.set_index(["a", "b"])
    assert not sep.loc[("stick", "stick_twin"), "separable"]
    assert sep.loc[("stick", "ball_fast"), "separable"] and sep.loc[("stick_twin", "ball_fast"), "separable"]
    for truth in ("stick", "stick_twin"):
        row = result.known[(result.known["metric"] == "c2st_accuracy") & (result.known["truth"] == truth)].iloc[0]
        assert {row["picked"], row["runner_up"]} == {"stick", "stick_twin"}
        assert not row["told_apart"] and row["acceptable"]
        assert "≈" in verdict_head(row.to_dict())
    valid = result.validation.set_index("metric")
    assert valid.loc["c2st_accuracy", "validated"]  # naming the twin is not an error
    # the twins' mixtures need not move; the pairs with the ball must
    mix = result.mixtures[result.mixtures["metric"] == "c2st_accuracy"].set_index(["a", "b"])
    assert not mix.loc[("stick", "stick_twin"), "separable"] and mix.loc[("stick", "stick_twin"), "ok"]
    assert mix.loc[("stick", "ball_fast"), "crosses"]


def test_pseudo_scans_use_disjoint_seeds_and_the_subject_shape(unmistakable, sample):
    panel, _ = unmistakable
    scan = pseudo_scan(panel, "stick")
    # as many voxels as the real scan has judge voxels (the sample's chessboard: 496 of 1000)
    assert sample.is_split and sample.n_judge_voxels == 496
    assert scan.shape == (sample.n_judge_voxels, sample.n_directions)
    again = pseudo_scan(panel, "stick")
    np.testing.assert_array_equal(scan, again)  # seeded
    training = replicate_seeds(0, panel.specs["stick"], 0)[0]
    assert judge_seed(0, panel.specs["stick"], 0, "pseudo_scan") != training
    assert judge_seed(0, panel.specs["stick"], 0, "judge_set")[:3] == training[:3]
    with pytest.raises(ValueError, match="purpose"):
        judge_seed(0, "Syn", 0, "simulation")


def _mixture_scores(pref_a, pref_b):
    """Scores on A+B mixtures: A's replicates score ``pref_a(w)``, B's ``pref_b(w)``."""
    rows = []
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        for r in range(2):
            rows.append(("d", "s", "A", r, "m", "all", pref_a(w), f"A+B@{w:g}"))
            rows.append(("d", "s", "B", r, "m", "all", pref_b(w), f"A+B@{w:g}"))
    return pd.DataFrame(rows, columns=[*COLUMNS, "scan"])


SEPARABLE = pd.DataFrame({"a": ["A"], "b": ["B"], "separable": [True]})


def test_mixture_preference_follows_the_weight_by_hand():
    # A scores 0.8 - 0.3 w, B 0.5 + 0.3 w: preference B - A = 0.6 w - 0.3
    follows = mixture_preferences(_mixture_scores(lambda w: 0.8 - 0.3 * w, lambda w: 0.5 + 0.3 * w), SEPARABLE)
    row = follows.iloc[0]
    assert row["preference"] == "-0.3;-0.15;0;0.15;0.3"
    assert row["rho"] == pytest.approx(1.0) and row["monotone"] and row["crosses"] and row["ok"]
    # a judge that prefers A whatever the data (a column effect): monotone but never crosses
    column = mixture_preferences(_mixture_scores(lambda w: 0.1 - 0.01 * w, lambda w: 0.5), SEPARABLE)
    assert column.iloc[0]["monotone"] and not column.iloc[0]["crosses"] and not column.iloc[0]["ok"]
    # the same on a pair the pseudo-scans cannot tell apart is no failure
    apart = SEPARABLE.assign(separable=False)
    assert mixture_preferences(_mixture_scores(lambda w: 0.1, lambda w: 0.5), apart).iloc[0]["ok"]


def test_validate_by_hand():
    known = pd.DataFrame({
        "dataset": "d", "subject": "s", "judge": "two_sample", "metric": ["good"] * 2 + ["bad"] * 2,
        "truth": ["A", "B", "A", "B"], "picked": ["A", "B", "A", "A"],
        "correct": [True, True, True, False], "acceptable": [True, True, True, False],
    })
    mixtures = pd.DataFrame({"dataset": "d", "subject": "s", "metric": ["good", "bad"], "a": "A", "b": "B",
                             "separable": True, "ok": [True, False]})
    out = validate(known, mixtures).set_index("metric")
    assert out.loc["good", "validated"] and out.loc["good", "named"] == 2 and out.loc["good", "reason"] == ""
    assert not out.loc["bad", "validated"]
    assert out.loc["bad", "reason"] == "named A for B; mixtures not followed: A vs B"


def test_one_generator_validates_nothing_and_breaks_nothing():
    """With one generator there are no pairs: no mixtures, nothing told apart, and every
    judge reads 'not validated' with the reason (a run of one generator once failed here)."""
    scores = pd.DataFrame(columns=["dataset", "subject", "scan", "method", "replicate", "metric", "value"])
    separable = pd.DataFrame(columns=["a", "b", "accuracy", "p", "separable"])
    mixtures = mixture_preferences(scores, separable)
    assert mixtures.empty and "ok" in mixtures.columns
    known = pd.DataFrame({"dataset": "d", "subject": "s", "judge": "two_sample", "metric": ["c2st_accuracy"],
                          "truth": ["A"], "picked": ["A"], "correct": [True], "acceptable": [True]})
    row = validate(known, mixtures).iloc[0]
    assert not row["validated"] and row["reason"] == "one generator: nothing to tell apart"
    assert row["mixtures"] == 0 and row["mixtures_ok"] == 0


def test_a_dataset_is_validated_only_when_every_subject_is():
    verdict = pd.DataFrame({"dataset": ["d", "d"], "metric": ["c2st_accuracy", "signal_mae"],
                            "best": ["A", "A"], "runner_up": ["B", "B"]})
    validation = pd.DataFrame({
        "dataset": "d", "subject": ["s1", "s2", "s1", "s2"], "judge": "x",
        "metric": ["c2st_accuracy", "c2st_accuracy", "signal_mae", "signal_mae"],
        "validated": [True, True, True, False], "named": [2, 2, 2, 1], "acceptable": [2, 2, 2, 1],
        "cases": 2, "mixtures_ok": 1, "mixtures": 1, "reason": "",
    })
    out = with_validation(verdict, validation)
    assert out["metric"].tolist() == ["c2st_accuracy", "signal_mae"]
    assert out["validated"].tolist() == [True, False]
    assert out["judge"].tolist() == ["two_sample", "reconstruction"]
    assert out.loc[1, "known_answer"].startswith("named the true generator in 3 of 4 known-answer cases over 2 subjects")
    # reordered: a validated judge moves ahead of one that failed
    flipped = with_validation(verdict.iloc[::-1].reset_index(drop=True), validation)
    assert flipped["metric"].tolist() == ["c2st_accuracy", "signal_mae"]
    assert not with_validation(verdict, None)["validated"].any()


def test_dense_forward_equals_keras(rng):
    model = build_autoencoder(30, seed=3)
    x = rng.uniform(0, 1, (257, 30)).astype(np.float32)
    recon, code = DenseForward(model)(x)
    np.testing.assert_allclose(recon, reconstruct(model, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(code, encode(model, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="to match the model"):
        DenseForward(model)(x[:, :5])
    with pytest.raises(ValueError, match="no Dense layer"):
        DenseForward(model, layer="nope")

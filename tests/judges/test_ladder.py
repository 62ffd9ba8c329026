"""The known-answer ladder: candidates none of which is the truth must be ordered by their
distance from it, and a judge that fails to order them is not validated.

Expected values come from the construction: a scalar-diffusivity ball whose log D is
uniform, so scaling D by s shifts log D by log s and the total variation between the
truth (s* = 1.2) and a rung s is |log(s / s*)| / width, which orders the rungs exactly as
|s - s*| does; hand-made known-answer, mixture and ladder tables for the validation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from conftest import split_phantom
from helpers.judges import realism
from helpers.judges.panel import LADDER_RUNGS, LADDER_TRUTH, ladder_specs, validate

B = np.array([500.0, 1000.0, 2000.0, 3000.0])


def ball(scale, n, rng, *, sigma=0.01):
    """n noisy ball signals exp(-b s D) with log D ~ U(log 0.5e-3, log 1.5e-3), Rician noise."""
    d = np.exp(rng.uniform(np.log(0.5e-3), np.log(1.5e-3), n)) * scale
    clean = np.exp(-B[None] * d[:, None])
    return np.hypot(clean + sigma * rng.standard_normal(clean.shape), sigma * rng.standard_normal(clean.shape))


def test_the_ladders_constants():
    assert LADDER_TRUTH == 1.2 and LADDER_TRUTH not in LADDER_RUNGS
    assert ladder_specs("Syn") == ["Syn*0.8", "Syn*1", "Syn*1.15", "Syn*1.5", "Syn*2"]
    assert ladder_specs("FORCE", (0.5, 2)) == ["FORCE*0.5", "FORCE*2"]


def test_a_ball_ladder_is_ordered_by_distance_from_the_truth():
    """Width of log D: log 3 = 1.099. TV(s, 1.2) = |log(s/1.2)| / 1.099 for the rungs
    0.8, 1, 1.15, 1.5, 2: 0.37, 0.17, 0.04, 0.20, 0.46, so the best accuracy 0.5 + TV/2
    is 0.68, 0.58, 0.52, 0.60, 0.73 (the noise lowers each a little), the order of
    |s - 1.2| = 0.4, 0.2, 0.05, 0.3, 0.8. One swap of neighbours still gives ρ = 0.9."""
    rng = np.random.default_rng(21)
    truth = ball(LADDER_TRUTH, 3000, rng)
    acc = np.array([realism.c2st_crossfit(truth, ball(s, 3000, rng), seed=[4, i]).accuracy
                    for i, s in enumerate(LADDER_RUNGS)])
    distance = np.abs(np.array(LADDER_RUNGS) - LADDER_TRUTH)
    rho = stats.spearmanr(acc, distance).statistic
    assert rho >= 0.9, (acc.tolist(), rho)
    # the nearest rung is the hardest to tell from the truth, the farthest the easiest
    assert np.argmin(acc) == np.argmin(distance) and np.argmax(acc) == np.argmax(distance)
    tv = np.abs(np.log(np.array(LADDER_RUNGS) / LADDER_TRUTH)) / np.log(3.0)
    assert (acc <= 0.5 + tv / 2 + 0.03).all()  # no classifier beats the total variation


# ----------------------------------------------------------------------------- 11. validation


def _tables():
    """Two metrics that name both generators right and follow their mixture."""
    known = pd.DataFrame({
        "dataset": "d", "subject": "s", "judge": "two_sample", "metric": ["m1"] * 2 + ["m2"] * 2,
        "truth": ["A", "B"] * 2, "picked": ["A", "B"] * 2, "correct": True, "acceptable": True,
    })
    mixtures = pd.DataFrame({"dataset": "d", "subject": "s", "metric": ["m1", "m2"], "a": "A", "b": "B",
                             "separable": True, "ok": True})
    return known, mixtures


def _ladder(metric, family, rho, passed):
    return {"dataset": "d", "subject": "s", "judge": "two_sample", "metric": metric, "family": family, "truth": 1.2,
            "rungs": "0.8;1;1.15;1.5;2", "distances": "0.4;0.2;0.05;0.3;0.8", "scores": "", "order": "",
            "rho": rho, "passed": passed}


def test_validate_without_a_ladder_checks_identity_and_mixtures():
    known, mixtures = _tables()
    out = validate(known, mixtures).set_index("metric")
    assert out["validated"].tolist() == [True, True] and (out["reason"] == "").all()
    assert (out["ladders"] == 0).all()


def test_a_failed_ladder_is_not_validated():
    known, mixtures = _tables()
    ladder = pd.DataFrame([_ladder("m1", "Syn", 1.0, True), _ladder("m1", "FORCE", 0.95, True),
                           _ladder("m2", "Syn", 1.0, True), _ladder("m2", "FORCE", 0.3, False)])
    out = validate(known, mixtures, ladder).set_index("metric")
    assert bool(out.loc["m1", "validated"]) and out.loc["m1", "reason"] == ""
    assert out.loc["m1", "ladders"] == 2 and out.loc["m1", "ladders_ok"] == 2
    assert not out.loc["m2", "validated"]
    assert "ladder" in out.loc["m2", "reason"] and "FORCE" in out.loc["m2", "reason"]
    assert "Syn" not in out.loc["m2", "reason"]  # the ladder it ordered is not blamed
    assert out.loc["m2", "ladders"] == 2 and out.loc["m2", "ladders_ok"] == 1
    # a ladder whose scores could not be ranked at all (rho NaN) fails too
    nan = pd.DataFrame([_ladder("m1", "Syn", np.nan, False), _ladder("m2", "Syn", 1.0, True)])
    out = validate(known, mixtures, nan).set_index("metric")
    assert not out.loc["m1", "validated"] and "ladder" in out.loc["m1", "reason"]
    assert bool(out.loc["m2", "validated"])


def test_a_metric_without_a_ladder_row_is_not_validated_when_ladders_ran():
    known, mixtures = _tables()
    ladder = pd.DataFrame([_ladder("m1", "Syn", 1.0, True)])
    out = validate(known, mixtures, ladder).set_index("metric")
    assert bool(out.loc["m1", "validated"])
    assert not out.loc["m2", "validated"] and "no ladder" in out.loc["m2", "reason"]
    assert out.loc["m2", "ladders"] == 0
    # the ladder of another subject is not this one's
    other = pd.DataFrame([_ladder("m2", "Syn", 1.0, True)]).assign(subject="t")
    out = validate(known, mixtures, pd.concat([ladder, other])).set_index("metric")
    assert not out.loc["m2", "validated"] and "no ladder" in out.loc["m2", "reason"]


# ----------------------------------------------------------------------------- ladder_check on a panel


def test_ladder_check_orders_syn_rungs_on_a_phantom():
    """A 20x20x10 split phantom judged by untrained autoencoders for the Syn rungs: the
    two-sample classifier on invariant features needs no training, and Syn*s against the
    truth Syn*1.2 differs only in diffusivity scale, so its accuracies must follow
    |s - 1.2| (the distances written out by hand)."""
    from helpers.judges.autoencoder import build_autoencoder
    from helpers.judges.panel import JudgePanel, ladder_check

    subject = split_phantom()
    specs = {m: m for m in ladder_specs("Syn")}
    models = {(m, 0): build_autoencoder(30, seed=i) for i, m in enumerate(specs)}
    panel = JudgePanel(subject, models, specs, seed=0, snr="auto", n_judge=2000)
    ladder, scores = ladder_check(panel, ("Syn",), dataset="d", subject="s")
    assert panel.specs == specs  # the truth is drawn, not added to the panel's generators
    row = ladder.set_index("metric").loc["c2st_accuracy"]
    assert row["family"] == "Syn" and row["truth"] == 1.2
    assert row["rungs"] == "0.8;1;1.15;1.5;2" and row["distances"] == "0.4;0.2;0.05;0.3;0.8"
    assert row["rho"] >= 0.9 and bool(row["passed"])
    assert row["order"].split(";")[0] == "1.15" and row["order"].split(";")[-1] == "2"
    # the scores the table summarises: one per rung, on the truth's pseudo-scan
    c = scores[scores["metric"] == "c2st_accuracy"]
    assert set(c["scan"]) == {"Syn*1.2"} and sorted(c["method"]) == sorted(specs)
    means = c.groupby("method")["value"].mean()[ladder_specs("Syn")].to_numpy()
    assert stats.spearmanr(means, [0.4, 0.2, 0.05, 0.3, 0.8]).statistic == row["rho"]

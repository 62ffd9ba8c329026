"""Tests of helpers.report.text on hand-written verdict and stats tables."""

import ast
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import HAND_VERDICT
from helpers.report import text as R

VERDICT = pd.DataFrame(
    [
        # dataset, metric, best, runner_up, best_mean, runner_mean, margin, ci_low, ci_high,
        # level, n_units, rank_held, rank_n, floor, ratio_to_floor
        ("sample", "signal_mae", "SampleAndMean", "Sampled", 0.0814, 0.0815, 0.0001, -0.002,
         0.002, "replicate", 10, 3, 5, 0.081, 1.05),
        ("sample", "fa_mae", "Sampled", "SampleAndMean", 0.074, 0.077, 0.003, 0.001, 0.005,
         "replicate", 10, 5, 5, np.nan, np.nan),
        ("sample", "angle_deg", "Sampled", "SampleAndMean", 4.6, 5.5, 0.9, -1.1, 2.9,
         "replicate", 10, 4, 5, np.nan, np.nan),
        ("invivo", "angle_deg", "ball_stick", "Syn", 3.0, 6.0, 3.0, 1.5, 4.5, "subject",
         4, 19, 20, np.nan, np.nan),
    ],
    columns=list(R.VERDICT_COLUMNS),
)

COLLAPSED = pd.DataFrame([("sample", "sub-01", "Syn", 3, 3.1)],
                         columns=["dataset", "subject", "method", "replicate", "ratio"])


def _text(**kw):
    args = dict(profile="paper", n_subjects={"sample": 1, "invivo": 1})
    return R.verdict_markdown(VERDICT, **{**args, **kw})


def test_verdict_leads_with_the_answer_per_metric():
    text = _text()
    assert text.startswith("Profile: **paper**.")
    assert text.index("### sample") < text.index("### invivo")
    # intervals that include 0 never say "closest": the two cannot be told apart
    assert ("**Sampled ≈ SampleAndMean** on angular deviation — 4.6° vs 5.5° (SampleAndMean), "
            "margin 0.9° [95% CI -1.1, 2.9], lowest in 4/5 replicates.") in text
    assert ("**SampleAndMean ≈ Sampled** on signal MAE — 0.0814 vs 0.0815 (Sampled), "
            "margin 0.0001 [95% CI -0.002, 0.002], lowest in 3/5 replicates; "
            "1.05x the noise floor 0.081.") in text
    assert "noise floor" not in next(l for l in text.splitlines() if "on FA MAE" in l)
    # How sure: the interval of the margin against 0, across which units.
    fa = next(l for l in text.splitlines() if "on FA MAE" in l)
    assert "excludes 0 (across 10 replicate models of the two methods)" in fa
    angle = next(l for l in text.splitlines() if "on angular deviation" in l and "4.6" in l)
    assert "includes 0 (across 10 replicate models" in angle and "cannot be told apart" in angle
    invivo = next(l for l in text.splitlines() if "ball_stick" in l)  # a plugin's name
    assert "lowest in 19/20 replicates" in invivo and "excludes 0 (across 4 subjects)" in invivo


def test_validated_judges_lead_and_the_others_say_what_they_measure():
    judged = VERDICT[VERDICT["dataset"] == "sample"].assign(
        metric=["signal_mae", "c2st_accuracy", "code_mmd"], judge=["reconstruction", "two_sample", "code_distance"],
        validated=[False, True, False], known_answer=["named the true generator in 1 of 4 known-answer cases on this scan",
                                                      "named 4 of 4", "named 2 of 4"])
    text = R.verdict_markdown(judged, profile="paper", n_subjects={"sample": 1})
    lines = text.splitlines()
    validated = lines.index(next(l for l in lines if l.startswith("**Judges validated")))
    failed = lines.index(next(l for l in lines if l.startswith("**Not validated")))
    c2st = lines.index(next(l for l in lines if "*two-sample classifier*" in l))
    recon = next(l for l in lines if "denoiser-training error" in l)
    assert validated < c2st < failed < lines.index(recon)
    assert "**Closest: Sampled**" in lines[c2st]  # its interval excludes 0
    assert "**SampleAndMean ≈ Sampled**" in recon and "trains the better denoiser" in recon
    assert "named the true generator in 1 of 4 known-answer cases on this scan" in recon
    none = R.verdict_markdown(judged.assign(validated=False), profile="paper", n_subjects={"sample": 1})
    assert "No judge passed the known-answer check" in none and "Closest" not in none


def test_quick_profile_says_smoke_test_first():
    text = _text(profile={"name": "quick", "epochs": 1})
    first = text.splitlines()[0]
    assert first.startswith("**") and "smoke test" in first and "not a finding" in first
    assert "smoke test" not in _text()


def test_skipped_methods_with_reasons():
    reason = "no WM voxel with FA > 0.7"
    text = _text(skipped={"sub-01": {"Sampled": reason, "SampleAndMean": reason}})
    assert f"- Sampled on sub-01: {reason}" in text
    assert f"- SampleAndMean on sub-01: {reason}" in text
    table = pd.DataFrame([("invivo", "crop", "Sampled", reason)],
                         columns=["dataset", "subject", "method", "reason"])
    assert f"- Sampled on invivo/crop: {reason}" in _text(skipped=table)
    assert "Skipped" not in _text()


def test_collapsed_replicates_named_and_verdict_change_stated():
    text = _text(collapsed=COLLAPSED)
    assert "Syn replicate 3 of sample/sub-01 (validation loss 3.1x its method's median)" in text
    assert "not recomputed" in text
    same = _text(collapsed=COLLAPSED, verdict_without_collapsed=VERDICT)
    assert "Without them the verdict is unchanged." in same
    changed = VERDICT.copy()
    changed.loc[2, "best"] = "SampleAndMean"
    text = _text(collapsed=COLLAPSED, verdict_without_collapsed=changed)
    assert "verdict changes: sample angular deviation: SampleAndMean instead of Sampled" in text


def test_tiny_pools_named():
    text = _text(tiny_pools={"crop": ["CSF: 4 voxels", "GM: 11 voxels"]})
    assert "Tiny tissue pools" in text and "- crop: CSF: 4 voxels; GM: 11 voxels" in text


def test_caveats_appear_once_at_the_end():
    text = _text(approximate_tissue=["sub-01"], synthetic=["phantom-1"],
                 realism_agreement={"sample": "the two judges agree."})
    assert text.count("training randomness only") == 1  # two small datasets, one caveat
    assert text.count("approximate (DTI thresholds)") == 1
    assert text.count("synthetic benchmark phantoms") == 1
    assert text.index("**Caveats**") > text.index("### invivo")
    assert "sample, invivo: fewer than 3 subjects" in text
    assert "Second judge (two-sample test): the two judges agree." in text
    # With enough subjects the replicate caveat is not there.
    many = R.verdict_markdown(VERDICT, profile="paper", n_subjects=12)
    assert "training randomness only" not in many and "**Caveats**" not in many
    table = pd.DataFrame({"dataset": ["invivo"], "agree": [False]})
    assert "disagree" in _text(realism_agreement=table)


def test_verdict_needs_its_columns():
    with pytest.raises(ValueError, match=r"verdict is missing column\(s\) \['rank_held'\]"):
        R.verdict_markdown(VERDICT.drop(columns="rank_held"), profile="paper", n_subjects=1)


def test_stats_display_is_compact():
    stats = pd.DataFrame([
        ("sample", "angle_deg", "all", "Sampled", "Syn", "welch_t", "replicate", 10, -2.345,
         -4.0, -0.7, -3.2, 0.004, 0.012, "*", 4, 5, ""),
        ("sample", "signal_mae", "all", "Sampled", "Syn", "mann_whitney", "replicate", 10,
         np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan,
         "all differences are zero"),
    ], columns=["dataset", "metric", "tissue", "method_a", "method_b", "test", "level", "n",
                "mean_diff", "ci_low", "ci_high", "statistic", "p", "p_holm", "stars", "held",
                "n_compared", "note"])
    out = R.stats_display(stats)
    assert list(out.columns) == ["dataset", "metric", "pair", "test", "mean diff [95% CI]",
                                 "Holm p", "stars", "held"]
    assert out.iloc[0].tolist() == ["sample", "angular deviation", "Sampled vs Syn", "welch_t",
                                    "-2.3 [-4.0, -0.7]", "0.012", "*", "4/5"]
    assert out.iloc[1].tolist()[4:] == ["–", "–", "", "–"]
    assert list(R.stats_display(stats, tests=["welch_t"])["test"]) == ["welch_t"]


def test_error_map_volumes_reads_mean_maps(tmp_path):
    maps = tmp_path / "metrics" / "maps"
    maps.mkdir(parents=True)
    vol = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), maps / "ball_stick_signal_mae.nii.gz")
    out = R.error_map_volumes(tmp_path, ["mylab.gens:ball_stick", "Sampled"], "signal_mae")
    assert list(out) == ["ball_stick"]  # Sampled was skipped: no map
    np.testing.assert_array_equal(out["ball_stick"], vol)
    with pytest.raises(ValueError, match="no 'fa_mae' map"):
        R.error_map_volumes(tmp_path, ["Syn"], "fa_mae")


def test_report_does_not_import_figures():
    tree = ast.parse(Path(R.__file__).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("figures" in (m or "") for m in modules)


def test_findings_are_written_from_the_summary_tables(tmp_path):
    known = pd.DataFrame({
        "dataset": "invivo", "subject": "b1k_b2k", "judge": "two_sample", "metric": "c2st_accuracy",
        "truth": ["Syn", "RandomWM"], "picked": ["Syn", "Syn"], "runner_up": ["RandomWM", "RandomWM"],
        "told_apart": True, "ci_low": 0.1, "ci_high": 0.2, "truth_first": [5, 0], "n": 5,
        "correct": [True, False], "acceptable": [True, False],
    })
    known.to_csv(tmp_path / "known_answer.csv", index=False)
    pd.DataFrame({"dataset": ["invivo"], "subject": ["b1k_b2k"], "judge": ["two_sample"], "metric": ["c2st_accuracy"],
                  "validated": [False], "named": [1], "acceptable": [1], "cases": [2], "mixtures_ok": [0],
                  "mixtures": [1], "reason": ["named Syn for RandomWM"]}).to_csv(tmp_path / "validation.csv", index=False)
    pd.DataFrame({"dataset": "invivo", "subject": "b1k_b2k", "method": ["Syn", "Syn"],
                  "synthetic_noise": ["global", "per_voxel"], "accuracy": [0.75, 0.505], "p": [0, 0.4]}
                 ).to_csv(tmp_path / "noise_check.csv", index=False)
    text = R.findings_markdown(tmp_path)
    assert "| Syn | Syn (5/5) |" in text and "| RandomWM | Syn (0/5) |" in text
    # a validation table written before the ladder: its ladder column is "–"
    assert "| c2st_accuracy | no | 1 of 2 (1 with the inseparable) | 0 of 1 | – | named Syn for RandomWM |" in text
    assert "| Syn | 0.750 | 0.505 |" in text
    # an older summary: each missing table is one line, not an error
    for name in ("ladder.csv", "distances.csv", "features.csv"):
        assert f"No `{name}` in this summary" in text


# --------------------------------------------------------------------------- distance first

# A judged verdict as helpers.run.pipeline writes it (with_distance, with_validation,
# with_disagreement): two validated judges that name different generators, and the
# reconstruction error, not validated. The numbers are typed by hand.
JUDGED = pd.DataFrame([
    dict(dataset="sample", metric="c2st_accuracy", judge="two_sample", validated=True, best="Sampled",
         runner_up="Syn", best_mean=0.723, runner_mean=0.80, margin=0.077, ci_low=0.05, ci_high=0.10,
         level="bootstrap", n_units=6, rank_held=3, rank_n=3, floor=np.nan, ratio_to_floor=np.nan,
         known_answer="named 4 of 4", score_low=0.70, score_high=0.75, real_vs_real=0.50, floor_low=0.48,
         floor_high=0.52, realistic=False, realistic_rule="at most 0.05 above the floor",
         disagrees="bottleneck-code distance: Syn"),
    dict(dataset="sample", metric="code_mmd", judge="code_distance", validated=True, best="Syn",
         runner_up="Sampled", best_mean=0.0012, runner_mean=0.0020, margin=0.0008, ci_low=0.0003, ci_high=0.0021,
         level="bootstrap", n_units=6, rank_held=2, rank_n=3, floor=np.nan, ratio_to_floor=np.nan,
         known_answer="named 3 of 4", score_low=0.0010, score_high=0.0014, real_vs_real=0.0003,
         floor_low=-0.0004, floor_high=0.0009, realistic=False,
         realistic_rule="at most the floor's 97.5th bootstrap percentile", disagrees="two-sample classifier: Sampled"),
    dict(dataset="sample", metric="signal_mae", judge="reconstruction", validated=False, best="SampleAndMean",
         runner_up="Sampled", best_mean=0.0814, runner_mean=0.0815, margin=0.0001, ci_low=-0.002, ci_high=0.002,
         level="bootstrap", n_units=6, rank_held=3, rank_n=3, floor=0.081, ratio_to_floor=1.05,
         known_answer="named 1 of 4", score_low=0.080, score_high=0.083, real_vs_real=np.nan, floor_low=np.nan,
         floor_high=np.nan, realistic=np.nan, realistic_rule="", disagrees=""),
])


def _judged(table=JUDGED):
    return R.verdict_markdown(table, profile="paper", n_subjects={"sample": 1}).splitlines()


def test_verdict_leads_with_the_headline():
    lines = _judged()
    heading = lines.index("### sample: 1 subject")
    assert lines[heading + 2] == ("**No candidate is realistic for this scan: the closest, Sampled, is told from it "
                                  "in 72% of voxels (two halves of the scan: 50%).**")
    assert heading + 2 < lines.index(next(l for l in lines if l.startswith("**Judges validated")))
    # one judge finds its closest realistic: the headline names it and its judge
    ok = JUDGED.copy()
    ok.loc[1, "realistic"] = True
    assert ("**Syn is realistic for this scan by the bottleneck-code distance: score 0.0012 (95% CI 0.001 to "
            "0.0014), floor 0.0003 (two halves of the scan).**") in _judged(ok)
    # no validated judge with a floor: no headline
    none = _judged(JUDGED.assign(validated=False))
    assert not any("realistic for this scan" in l for l in none)


def test_each_judge_gives_the_closest_score_its_interval_the_floor_and_realistic():
    lines = _judged()
    c2st = next(l for l in lines if l.startswith("- *two-sample classifier*"))
    assert ("Sampled is told from the scan in 72% of voxels (95% CI 70-75%; two halves of the scan: 50%): "
            "not realistic (realistic: at most 0.05 above the floor).") in c2st
    # the margin's interval is a block bootstrap, and says so
    assert ("The interval excludes 0 (block bootstrap of the judge voxels and the replicate models): "
            "Sampled is closer than Syn with 95% confidence.") in c2st
    mmd = next(l for l in lines if l.startswith("- *bottleneck-code distance*"))
    assert ("Syn: score 0.0012 (95% CI 0.001 to 0.0014), floor 0.0003 (two halves of the scan): not realistic "
            "(realistic: at most the floor's 97.5th bootstrap percentile).") in mmd
    # not validated: its score and interval, no word on realistic
    recon = next(l for l in lines if "denoiser-training error" in l)
    assert "SampleAndMean: score 0.0814 (95% CI 0.08 to 0.083)." in recon and "realistic" not in recon
    # one subject, bootstrap intervals: the caveat says what they resample
    text = "\n".join(lines)
    assert "the intervals resample the judge voxels and the replicate models of the same scan(s)" in text
    assert "training randomness only" not in text


def test_disagreeing_validated_judges_are_both_shown():
    lines = _judged()
    line = next(l for l in lines if "validated judges disagree" in l)
    assert line == ("- **The validated judges disagree** on which generator is closest: *two-sample classifier* "
                    "names Sampled, told from the scan in 72% of voxels (95% CI 70-75%; two halves of the scan: "
                    "50%): not realistic; *bottleneck-code distance* names Syn, score 0.0012 (95% CI 0.001 to "
                    "0.0014), floor 0.0003 (two halves of the scan): not realistic. Both are shown: neither is "
                    "the verdict alone.")
    assert lines.index(line) < lines.index(next(l for l in lines if l.startswith("**Not validated")))
    agree = JUDGED.assign(disagrees="")
    assert not any("disagree" in l for l in _judged(agree))


def test_a_verdict_without_distance_columns_has_no_distance_words():
    # a verdict written before the distances: the judged lines as before, no headline, no distance
    old = JUDGED.drop(columns=["score_low", "score_high", "real_vs_real", "floor_low", "floor_high", "realistic",
                               "realistic_rule", "disagrees"])
    text = "\n".join(_judged(old))
    assert "two halves of the scan" not in text and "**Closest: Sampled**" in text


DISTANCES = pd.DataFrame({
    "dataset": "sample", "metric": ["c2st_accuracy", "c2st_accuracy", "signal_mae"],
    "method": ["Syn", "Sampled", "Sampled"], "score": [0.80, 0.723, 0.0815],
    "score_low": [0.78, 0.70, np.nan], "score_high": [0.82, 0.75, np.nan],
    "real_vs_real": [0.50, 0.50, np.nan], "realistic": [False, False, np.nan],
})

FEATURES = pd.DataFrame({
    "dataset": "sample", "subject": "sub-01",
    "method": ["Sampled"] * 3 + ["Syn"] * 3,
    "feature": ["md", "fa", "b1000_p2", "fa", "md", "b1000_p2"],
    "ks": [0.40, 0.30, 0.05, 0.60, 0.20, 0.10], "ks_p": 0.0,
    "median_real": [0.00081, 0.31, 0.12, 0.31, 0.00081, 0.12],
    "median_synthetic": [0.00072, 0.28, 0.12, 0.45, 0.00075, 0.13],
    "rank": [1, 2, 3, 1, 2, 3],
})

LADDER = pd.DataFrame({
    "dataset": "sample", "subject": "sub-01", "judge": "two_sample", "metric": "c2st_accuracy",
    "family": ["Syn", "FORCE"], "truth": 1.2, "rungs": "0.8;1;1.5", "distances": "0.4;0.2;0.3",
    "scores": "0.9;0.6;0.62", "order": ["1;1.5;0.8", "1.5;1;0.8"], "rho": [0.866, np.nan],
    "passed": [True, False],
})


def test_distance_display_sorts_closest_first_with_the_floor():
    out = R.distance_display(DISTANCES)
    assert list(out.columns) == ["dataset", "judge", "generator", "score [95% CI]", "two halves of the scan",
                                 "realistic"]
    assert out.iloc[0].tolist() == ["sample", "two-sample classifier", "Sampled", "0.723 [0.7, 0.75]", "0.5", "no"]
    assert out.iloc[1]["generator"] == "Syn"
    assert out.iloc[2].tolist()[3:] == ["0.0815", "–", "–"]  # no floor for a reconstruction error
    # the judges with a floor come first, whatever the table's order
    assert R.distance_display(DISTANCES.iloc[::-1])["generator"].tolist() == ["Sampled", "Syn", "Sampled"]
    # datasets keep the run's order, not the alphabet's
    two = pd.concat([DISTANCES, DISTANCES.assign(dataset="invivo")], ignore_index=True)
    assert R.distance_display(two)["dataset"].tolist() == ["sample"] * 3 + ["invivo"] * 3
    with pytest.raises(ValueError, match=r"distances is missing column\(s\) \['real_vs_real'\]"):
        R.distance_display(DISTANCES.drop(columns="real_vs_real"))


def test_closest_generators_follow_the_headline_judge():
    assert R.closest_generators(JUDGED) == {"sample": "Sampled"}  # the first validated judge with a floor
    first_without_floor = JUDGED.assign(realistic=[np.nan, False, np.nan])
    assert R.closest_generators(first_without_floor) == {"sample": "Syn"}
    assert R.closest_generators(JUDGED.assign(validated=False)) == {"sample": "Sampled"}  # the classifier's


def test_feature_tables():
    top = R.top_features(FEATURES, {"sample": "Sampled"}, n=2)
    assert top.values.tolist() == [["sample", "sub-01", "Sampled", "md", 0.4, "0.00081", "0.00072"],
                                   ["sample", "sub-01", "Sampled", "fa", 0.3, "0.31", "0.28"]]
    wide = R.feature_table(FEATURES)
    assert list(wide.columns) == ["Sampled", "Syn"]
    # features ordered by their mean KS over generators: fa 0.45, md 0.30, b1000_p2 0.075
    assert [i[2] for i in wide.index] == ["fa", "md", "b1000_p2"]
    assert wide.loc[("sample", "sub-01", "fa")].tolist() == [0.3, 0.6]
    two = pd.concat([FEATURES, FEATURES.assign(dataset="invivo")], ignore_index=True)
    assert [i[0] for i in R.feature_table(two).index] == ["sample"] * 3 + ["invivo"] * 3
    assert R.top_features(two, {"sample": "Syn", "invivo": "Syn"}, n=1)["dataset"].tolist() == ["sample", "invivo"]


def test_ladder_and_validation_display():
    out = R.ladder_display(LADDER)
    assert list(out.columns)[3:6] == ["family", "truth (scale)", "judge's order (closest first)"]
    assert out.iloc[0].tolist() == ["sample", "sub-01", "two-sample classifier", "Syn", "1.2", "1, 1.5, 0.8",
                                    "0.87", "yes"]
    assert out.iloc[1].tolist()[-2:] == ["–", "no"]
    validation = pd.DataFrame({"dataset": ["sample"], "subject": ["sub-01"], "metric": ["c2st_accuracy"],
                               "validated": [True], "named": [4], "acceptable": [4], "cases": [4],
                               "mixtures_ok": [2], "mixtures": [2], "ladders_ok": [1], "ladders": [2],
                               "reason": [np.nan]})
    assert R.validation_display(validation).iloc[0].tolist() == [
        "sample", "sub-01", "c2st_accuracy", "yes", "4 of 4 (4 with the inseparable)", "2 of 2", "1 of 2", ""]


def test_p_real_maps_read_the_closest_generators_map(tmp_path):
    sub = tmp_path / "sample" / "sub-01"
    (sub / "judges" / "maps").mkdir(parents=True)
    vol = np.full((2, 2, 2), np.nan, dtype=np.float32)
    vol[0, 0, 0] = 0.7
    nib.save(nib.Nifti1Image(vol, np.eye(4)), sub / "judges" / "maps" / "Sampled_p_real.nii.gz")
    older = tmp_path / "sample" / "sub-02"  # an older run: no maps
    older.mkdir()
    out = R.p_real_maps([sub, older], {"sample": "Sampled"})
    assert list(out) == [sub] and list(out[sub]) == ["Sampled"]
    np.testing.assert_array_equal(out[sub]["Sampled"], vol)
    assert R.p_real_maps([sub], {"sample": "Syn"}) == {}


def test_summary_table_is_none_when_absent_or_empty(tmp_path):
    assert R.summary_table(tmp_path, "ladder") is None
    (tmp_path / "ladder.csv").write_text("")
    assert R.summary_table(tmp_path, "ladder") is None
    LADDER.head(0).to_csv(tmp_path / "ladder.csv", index=False)
    assert R.summary_table(tmp_path, "ladder") is None
    LADDER.assign(subject="01").to_csv(tmp_path / "ladder.csv", index=False)
    assert R.summary_table(tmp_path, "ladder")["subject"].tolist() == ["01", "01"]  # ids stay text


def test_findings_include_the_distance_ladder_and_feature_tables(tmp_path):
    pd.DataFrame({"dataset": "sample", "subject": "sub-01", "judge": "two_sample", "metric": "c2st_accuracy",
                  "truth": ["Syn"], "picked": ["Syn"], "runner_up": ["Sampled"], "told_apart": True,
                  "ci_low": 0.1, "ci_high": 0.2, "truth_first": [3], "n": 3, "correct": [True],
                  "acceptable": [True]}).to_csv(tmp_path / "known_answer.csv", index=False)
    pd.DataFrame({"dataset": ["sample"], "subject": ["sub-01"], "judge": ["two_sample"], "metric": ["c2st_accuracy"],
                  "validated": [True], "named": [4], "acceptable": [4], "cases": [4], "mixtures_ok": [2],
                  "mixtures": [2], "ladders_ok": [1], "ladders": [2], "reason": [np.nan]}
                 ).to_csv(tmp_path / "validation.csv", index=False)
    pd.DataFrame({"dataset": "sample", "subject": "sub-01", "method": ["Syn", "Syn"],
                  "synthetic_noise": ["global", "per_voxel"], "accuracy": [0.75, 0.505], "p": [0, 0.4]}
                 ).to_csv(tmp_path / "noise_check.csv", index=False)
    LADDER.to_csv(tmp_path / "ladder.csv", index=False)
    DISTANCES.to_csv(tmp_path / "distances.csv", index=False)
    FEATURES.to_csv(tmp_path / "features.csv", index=False)
    JUDGED.to_csv(tmp_path / "verdict.csv", index=False)
    text = R.findings_markdown(tmp_path)
    lines = text.splitlines()
    assert "| c2st_accuracy | yes | 4 of 4 (4 with the inseparable) | 2 of 2 | 1 of 2 |  |" in lines
    assert "| two-sample classifier | Syn | 1.2 | 1, 1.5, 0.8 | 0.87 | yes |" in lines
    assert "| sample | two-sample classifier | Sampled | 0.723 [0.7, 0.75] | 0.5 | no |" in lines
    # the closest generator (the classifier's: Sampled) and its most different feature first
    top = lines.index("| dataset | subject | generator | feature | KS | median (scan) | median (generator) |")
    assert lines[top + 2] == "| sample | sub-01 | Sampled | md | 0.4 | 0.00081 | 0.00072 |"
    assert "| sample | sub-01 | fa | 0.3 | 0.6 |" in lines
    assert "no candidate is realistic for this scan" in text  # the verdict lines, as printed
    assert "No `" not in text




def test_verdict_lines_state_winner_margin_interval_and_stability(tmp_path):
    HAND_VERDICT.to_csv(tmp_path / "verdict.csv", index=False)
    assert R.verdict_lines(tmp_path / "verdict.csv") == [
        "sample · signal MAE (attenuation): Sampled closest, 0.0042 below Syn (95% CI 0.0011 to 0.0073), "
        "best in 4/5 replicates; 1.02x the noise floor",
        # the interval includes 0: never "closest" alone
        "sample · angular deviation (degrees): Sampled ≈ SampleAndMean (cannot be told apart), 0.89 below "
        "SampleAndMean (95% CI -1.5 to 3.3), best in 3/5 replicates",
    ]
    assert R.verdict_lines(tmp_path / "absent.csv") == []


def test_verdict_lines_lead_with_validated_judges_and_name_the_others(tmp_path):
    judged = HAND_VERDICT.assign(
        metric=["c2st_accuracy", "signal_mae"], judge=["two_sample", "reconstruction"], validated=[True, False],
        known_answer=["named the true generator in 4 of 4 known-answer cases on this scan",
                      "named the true generator in 1 of 4 known-answer cases on this scan"],
        ci_low=[0.0011, 0.002],
    )
    judged.to_csv(tmp_path / "verdict.csv", index=False)
    lines = R.verdict_lines(tmp_path / "verdict.csv")
    assert lines[0].startswith("sample · two-sample classifier [validated]: Sampled closest, 0.0042 below Syn")
    assert lines[1].startswith(
        "sample · denoiser-training error (the method paper's reconstruction error), signal MAE "
        "[not validated: named the true generator in 1 of 4 known-answer cases on this scan]: Sampled lowest, "
    )


def test_compact_lines_print_each_judge_once_short_and_wrapped(tmp_path):
    judged = pd.DataFrame([
        dict(dataset="invivo", metric="c2st_accuracy", judge="two_sample", validated=True, best="Calibrated",
             runner_up="SubjectFORCE", best_mean=0.687, score_low=0.671, score_high=0.702, real_vs_real=0.501,
             realistic=False, margin=0.04, ci_low=0.02, ci_high=0.06, known_answer="ok"),
        dict(dataset="invivo", metric="signal_mae", judge="reconstruction", validated=False, best="Sampled",
             runner_up="Syn", best_mean=0.0402, score_low=0.0369, score_high=0.044, margin=0.001, ci_low=-0.001,
             ci_high=0.003, known_answer="named the true generator in 1 of 6"),
    ])
    judged.to_csv(tmp_path / "verdict.csv", index=False)
    blocks = R.compact_lines(tmp_path / "verdict.csv", width=200)
    assert blocks == {"invivo": [
        "no candidate is realistic for this scan: the closest, Calibrated, is told from it in 69% of voxels "
        "(two halves of the scan: 50%)",
        "two-sample classifier [validated]: Calibrated closest, 69% (95% CI 67-70%; floor 50%)",
        "denoiser-training error, signal MAE [not validated]: Sampled ≈ Syn, 0.0402 (95% CI 0.0369 to 0.044)",
    ]}
    narrow = R.compact_lines(tmp_path / "verdict.csv", width=60)["invivo"]
    assert all(len(line) <= 56 for line in narrow) and narrow[1].startswith("    ")  # wrapped, indented
    assert R.compact_lines(tmp_path / "verdict.csv", skip={"invivo"}) == {}  # a dataset already shown


def test_figure_pages_have_captions_and_the_summary_links_its_csvs(tmp_path):
    assert "replicate models" in R.figure_caption("known_answers")
    assert R.figure_caption("training_invivo") == R.FIGURE_CAPTIONS["training"]  # by prefix, per dataset
    assert R.figure_caption("unknown") is None
    (tmp_path / "verdict.csv").write_text("a\n1\n")
    (tmp_path / "distances.csv").write_text("a\n1\n")
    (tmp_path / "notes.txt").write_text("")
    assert R.csv_links(tmp_path) == ("**Every table as CSV**, in this folder: [distances.csv](distances.csv), "
                                     "[verdict.csv](verdict.csv).")
    assert R.csv_links(tmp_path / "empty") == ""


def test_first_subjects_names_one_folder_per_dataset(tmp_path):
    dirs = [tmp_path / "sample" / "small_64D", tmp_path / "invivo" / "b1k_b2k", tmp_path / "invivo" / "second"]
    assert R.first_subjects(dirs) == {"sample": dirs[0], "invivo": dirs[1]}

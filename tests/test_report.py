"""Tests of helpers.report on hand-written verdict and stats tables."""

import ast
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import report as R

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
    assert "| c2st_accuracy | no | 1 of 2 (1 with the inseparable) | 0 of 1 | named Syn for RandomWM |" in text
    assert "| Syn | 0.750 | 0.505 |" in text

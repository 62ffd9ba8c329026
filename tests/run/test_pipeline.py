"""The pipeline's glue: which methods a scan supports, the verdict's inputs, the tables
written for notebook 04. Hand-built subjects and tables; no notebook runs here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.contract import COLUMNS
from helpers.scan.subject import Subject
from helpers.run.pipeline import _collapsed_detail, replicate_table, supported_methods


def _subject(fa_high):
    """Single-tensor voxels on 30 directions: WM with FA ~0.85 (or ~0.3), GM, CSF slabs."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((30, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    b = np.full(30, 1000.0)
    shape = (6, 6, 3)
    idx = np.argwhere(np.ones(shape, bool))
    tissue = np.where(idx[:, 0] < 2, 3, np.where(idx[:, 0] < 4, 2, 1)).astype(np.uint8)
    wm = [1.7e-3, 1.5e-4, 1.5e-4] if fa_high else [1.0e-3, 6e-4, 6e-4]
    ev = np.select([tissue[:, None] == 3, tissue[:, None] == 2], [wm, [7e-4] * 3], [3e-3] * 3)
    att = np.exp(-b[None, :] * (ev @ (g**2).T))  # axis-aligned tensors: exp(-b Σ λ_k g_k²), by hand
    return Subject(attenuation=att.astype(np.float32), bvals=b, bvecs=g, indices=idx, shape=shape,
                   affine=np.eye(4), tissue=tissue, s0=np.ones(len(idx), np.float32), snr=30.0,
                   info={"subject": "toy"})


def test_a_scan_without_high_fa_wm_skips_only_the_sampling_methods():
    methods = ["Syn", "Sampled", "SampleAndMean", "RandomWM", "FORCE", "SubjectFORCE", "ball_stick:ball_stick"]
    supported, skipped = supported_methods(_subject(fa_high=False), methods)
    assert supported == ["Syn", "RandomWM", "FORCE", "ball_stick:ball_stick"]
    assert set(skipped) == {"Sampled", "SampleAndMean", "SubjectFORCE"}
    assert all("no WM voxel with FA > 0.7" in r for r in skipped.values())
    supported, skipped = supported_methods(_subject(fa_high=True), methods)
    assert supported == methods and skipped == {}


def test_collapsed_detail_gives_the_loss_over_the_method_median():
    rows = [("d", "s", "Syn", r, "val_loss", "all", v) for r, v in enumerate([1.0, 1.2, 0.8, 3.0])]
    rows += [("d", "s", "Syn", r, "collapsed", "all", float(r == 3)) for r in range(4)]
    detail = _collapsed_detail(pd.DataFrame(rows, columns=list(COLUMNS)))
    assert detail[["method", "replicate"]].values.tolist() == [["Syn", 3]]
    assert detail["ratio"].item() == pytest.approx(3.0 / 1.1)  # median of 1.0, 1.2, 0.8, 3.0 is 1.1


def test_replicate_table_is_mean_and_sd_over_replicates():
    rows = [("d", "s", "Syn", r, "signal_mae", "all", v) for r, v in enumerate([0.1, 0.2, 0.3])]
    rows += [("d", "s", "Syn", 0, "signal_mae", "WM", 9.0)]  # another tissue: not in the table
    table = replicate_table(pd.DataFrame(rows, columns=list(COLUMNS)))
    assert table.loc[("d", "Syn"), "signal_mae"] == "0.2 ± 0.1"


def test_judge_table_gives_the_mean_and_a_t_interval_over_replicates():
    from helpers.run.pipeline import judge_table

    rows = [("d", "s", "A", r, "c2st_accuracy", "all", v) for r, v in enumerate([0.6, 0.7, 0.8])]
    rows += [("d", "s", "B", 0, "c2st_accuracy", "all", 0.5)]
    table = judge_table(pd.DataFrame(rows, columns=list(COLUMNS)))
    # mean 0.7, sd 0.1, n 3: half-width t(0.975, 2) x 0.1 / sqrt(3) = 4.3027 x 0.057735 = 0.24841
    assert table.loc[("d", "A"), "c2st_accuracy"] == "0.7 [0.4516, 0.9484]"
    assert table.loc[("d", "B"), "c2st_accuracy"] == "0.5"  # one value: no interval

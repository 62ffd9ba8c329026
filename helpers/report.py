"""The words and maps of the results notebook: a short reading of the tables."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from helpers.figures import METRIC_LABELS
from helpers.io import load_json

__all__ = ["reading", "error_map_volumes"]



def reading(metrics, stats, subject_dirs=()):
    """A few Markdown lines saying what the tables show, per dataset.

    Ranks the methods by each metric (mean over subjects, all voxels), counts the method
    pairs that differ significantly, and repeats the caveats a reader must not miss:
    voxel-level tests, approximate tissue maps, synthetic benchmark subjects.
    """
    lines = []
    overall = metrics[metrics["tissue"] == "all"]
    for dataset, frame in overall.groupby("dataset", sort=False):
        n_sub = frame["subject"].nunique()
        lines.append(f"**{dataset}** ({n_sub} subject{'s' if n_sub != 1 else ''}):")
        for metric, label in METRIC_LABELS.items():
            means = frame[frame["metric"] == metric].groupby("method")["value"].mean().sort_values()
            if means.empty:
                continue
            ranked = ", ".join(f"{m} {v:.4g}" for m, v in means.items())
            lines.append(f"- {label}, lowest first: {ranked}.")
        s = stats[(stats["dataset"] == dataset) & (stats["test"] == "paired_t")]
        if len(s):
            sig = s[s["p_holm"] < 0.05]
            pairs = "; ".join(f"{r.metric}: {r.method_a} vs {r.method_b} {r.stars}" for r in sig.itertuples())
            lines.append(f"- paired t-tests, Holm-corrected: {len(sig)} of {len(s)} method pairs differ (p < 0.05){': ' + pairs if pairs else ''}.")
            caveats = sorted({c for c in s["caveat"] if isinstance(c, str) and c})
            lines += [f"- *Caveat:* {c}." for c in caveats]
    infos = [load_json(Path(d) / "subject.json")["info"] for d in subject_dirs]
    approx = sorted({str(i.get("subject")) for i in infos if str(i.get("tissue_source", "")).startswith("approximate")})
    if approx:
        lines.append(f"\n*Tissue maps of {', '.join(approx)} are approximate (DTI thresholds): per-tissue numbers are indicative.*")
    synthetic = sorted({str(i.get("subject")) for i in infos if i.get("synthetic")})
    if synthetic:
        lines.append(f"\n**These subjects are synthetic benchmark phantoms, not scans: {', '.join(synthetic)}.**")
    return "\n".join(lines)


def error_map_volumes(subject_dir, methods, metric):
    """method -> 3-D per-voxel error map (NaN outside the brain) read from
    ``metrics/maps/<method>_<metric>.nii.gz``."""
    maps = Path(subject_dir) / "metrics" / "maps"
    return {m: np.asarray(nib.load(maps / f"{m}_{metric}.nii.gz").dataobj) for m in methods}

"""The steps of the notebooks, as functions that read and write a subject folder.

A subject folder (``results/<dataset>/<subject>/``) holds, step by step::

    subject.npz, subject.json, mask/tissue/s0.nii.gz        01 load data
    synthetic/report.json, realism.csv                       02 simulate (preview, second judge)
    models/<name>/r<k>.keras, r<k>_history.csv,              03 train (replicates)
    models/diagnostics.csv, training.json
    metrics/metrics.csv, noise.json, maps/*.nii.gz           evaluation (batch runner or 04)

Synthetic training sets are never stored: each replicate's set is regenerated from its
seed where it is trained (:mod:`helpers.judges.training`). The notebooks call these functions
and show what they return; the batch runner calls :func:`evaluate_subject` itself so that
the evaluation runs where the subject runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.contract import COLUMNS, DEFAULTS, METRICS, check_methods, method_name, needs_pools, replicate_seeds
from helpers.io import load_json, save_csv, save_json

__all__ = [
    "supported_methods",
    "simulate_preview",
    "judge_realism",
    "evaluate_subject",
    "judge_subject",
    "find_subjects",
    "collect_results",
    "summarise_results",
    "interactive_dir",
]


def interactive_dir(*parts):
    """Where a notebook run by hand writes by default: ``results/interactive/...`` under
    the project (never over the batch runner's results)."""
    from helpers.config import PROJECT_ROOT

    return str(PROJECT_ROOT / "results" / "interactive" / Path(*parts))


def supported_methods(subject, methods, *, min_pool=DEFAULTS["min_pool"], wm_fa_min=DEFAULTS["wm_fa_min"]):
    """Split ``methods`` into those this subject supports and those it cannot.

    Returns
    -------
    supported : list of str
        Method specs, in the order given.
    skipped : dict
        Table name -> reason (e.g. no WM voxel with FA above ``wm_fa_min``).
    """
    from helpers.generators.simulation import method_support

    supported, skipped = [], {}
    for spec in check_methods(methods):
        reason = method_support(subject, spec, min_pool=min_pool, wm_fa_min=wm_fa_min)
        if reason:
            skipped[method_name(spec)] = reason
        else:
            supported.append(spec)
    return supported, skipped


def simulate_preview(
    subject,
    methods,
    *,
    n_voxels,
    seed=0,
    snr="auto",
    noise="global",
    min_pool=DEFAULTS["min_pool"],
    wm_fa_min=DEFAULTS["wm_fa_min"],
    out_dir=None,
):
    """A preview of every supported method's synthetic voxels (replicate 0's seed).

    Only ``n_voxels`` per method are drawn, for the figures of notebook 02; training
    regenerates the full sets itself. Writes ``synthetic/report.json`` when ``out_dir``
    is given.

    Returns
    -------
    data : dict
        Table name -> (clean, noisy) float32 arrays of shape (n_voxels, m).
    report : dict
        SNR used, noise mode, pools (voxels, eroded or fallback, mean MD), supported and
        skipped methods with reasons, seconds per method.
    """
    from helpers.generators.simulation import describe_generator, resolve_snr, simulate, tissue_pools

    supported, skipped = supported_methods(subject, methods, min_pool=min_pool, wm_fa_min=wm_fa_min)
    snr_value = resolve_snr(snr, subject)
    pools = None
    if any(needs_pools(m) for m in supported):
        pools = tissue_pools(subject, min_pool=min_pool, wm_fa_min=wm_fa_min)
    report = {
        "n_preview": int(n_voxels),
        "seed": int(seed),
        "snr_setting": snr,
        "snr": None if snr_value is None else round(snr_value, 3),
        "snr_method": subject.snr_method if str(snr).lower() == "auto" else "given in the config",
        "noise": noise,
        "pools": pools.report if pools is not None else {},
        "methods": [method_name(m) for m in supported],
        "skipped": skipped,
        "generators": {method_name(m): describe_generator(m, subject, pools=pools) for m in supported},
        "seconds": {},
    }
    data = {}
    for spec in supported:
        t = time.perf_counter()
        sim_seed, _ = replicate_seeds(seed, spec, 0)
        data[method_name(spec)] = simulate(
            subject, spec, n_voxels, sim_seed, snr=snr, noise=noise, pools=pools, min_pool=min_pool, wm_fa_min=wm_fa_min
        )
        report["seconds"][method_name(spec)] = round(time.perf_counter() - t, 3)
    if out_dir is not None:
        save_json(report, Path(out_dir) / "synthetic" / "report.json")
    return data, report


def calibration_budget(profile):
    """The calibration budget a profile sets (``calibration_evals``,
    ``calibration_resamples``, ``calibration_resample_evals``), as
    :func:`calibrate_subject`'s ``budget``; keys the profile lacks keep their defaults."""
    keys = {"calibration_evals": "max_evals", "calibration_resamples": "n_resamples",
            "calibration_resample_evals": "resample_evals"}
    return {name: profile[key] for key, name in keys.items() if key in (profile or {})}


def calibrate_subject(subject, subject_dir=None, *, seed=0, snr="auto", budget=None, force=False, log=print):
    """Fit ``Calibrated`` to the subject's fit voxels, or reuse ``calibration.json``.

    The saved fit is reused when its inputs are unchanged: the fit voxels, the gradient
    table, the seed, the SNR setting, the budget and :data:`helpers.generators.calibration.VERSION`
    (their SHA-256 is stored as ``inputs``). The result is set as ``subject.calibration``
    (so :func:`helpers.generators.simulation.simulate` draws from it) and written atomically.

    Parameters
    ----------
    subject : helpers.scan.subject.Subject
    subject_dir : path, optional
        Where ``calibration.json`` lives; None: fit and keep it in memory only.
    budget : dict, optional
        ``max_evals``, ``n_resamples``, ``resample_evals``, ``seconds`` (a cap; default
        :data:`helpers.generators.simulation.CALIBRATION_BUDGET`; a profile may set them,
        :func:`calibration_budget`).
    log : callable(str) or None
        Progress lines (about one every 10 seconds of fitting).

    Returns
    -------
    helpers.generators.calibration.Calibration
    """
    import hashlib
    import json

    from helpers.generators.calibration import VERSION, Calibration
    from helpers.generators.simulation import CALIBRATION_BUDGET, fit_calibration, fitted
    from helpers.scan.subject import CALIBRATION_FILE

    budget = {**CALIBRATION_BUDGET, **(budget or {})}
    part = fitted(subject)
    digest = hashlib.sha256()
    for array in (part.attenuation, subject.bvals, subject.bvecs):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps({"seed": seed, "snr": str(snr), "budget": budget, "version": VERSION},
                             sort_keys=True).encode())
    inputs = digest.hexdigest()
    path = None if subject_dir is None else Path(subject_dir) / CALIBRATION_FILE
    if path is not None and path.is_file() and not force:
        saved = load_json(path)
        if saved.get("inputs") == inputs:
            subject.calibration = Calibration.from_dict(saved)
            if log:
                log(f"Calibrated: reusing {path.name} (inputs unchanged; fitted in {saved.get('seconds', 0):.0f} s)")
            return subject.calibration
    last = [time.perf_counter()]

    def progress(stage, evaluations, best):
        if log and time.perf_counter() - last[0] >= 10:
            last[0] = time.perf_counter()
            log(f"Calibrated: {stage}, {evaluations} evaluations, distance {best:.4f}")

    if log:
        log(f"Calibrated: fitting to {part.n_voxels} fit voxels ({budget['max_evals']} evaluations, "
            f"then {budget['n_resamples']} bootstrap refits of {budget['resample_evals']})")
    cal = fit_calibration(subject, snr=snr, seed=seed, progress=progress, **budget)
    subject.calibration = cal
    if path is not None:
        save_json({**cal.to_dict(), "inputs": inputs}, path)
    if log:
        log(f"Calibrated: distance {cal.distance_start:.4f} at FORCE's defaults -> {cal.distance:.4f}, "
            f"{cal.evaluations} evaluations, {cal.seconds:.0f} s")
    return cal


def judge_realism(subject, methods, *, out_dir=None, **settings):
    """The second judge (:func:`helpers.judges.realism.realism_table`) for the supported methods.

    Returns the tidy table and the feature sets it was computed from (real voxels and
    each method's noisy voxels; :func:`helpers.judges.realism.realism_features` turns them into
    the FA-MD density figure's input). Writes ``realism.csv`` in the subject folder when
    ``out_dir`` is given.
    """
    from helpers.judges.realism import feature_sets, realism_table

    supported, _ = supported_methods(
        subject, methods, min_pool=settings.get("min_pool", DEFAULTS["min_pool"]),
        wm_fa_min=settings.get("wm_fa_min", DEFAULTS["wm_fa_min"]),
    )
    sets = feature_sets(subject, supported, **settings)
    table = realism_table(subject, supported, features=sets, **settings)
    if out_dir is not None:
        save_csv(table, Path(out_dir) / "realism.csv")
    return table, sets


def evaluate_subject(subject_dir, *, force=False, batch_size=65536):
    """Reconstruct a subject's real voxels with every trained model and write the metrics.

    Reads ``subject.npz``/``subject.json`` and the models listed in
    ``models/training.json``; writes ``metrics/metrics.csv`` (tidy, one row per method,
    replicate, metric and tissue), ``metrics/noise.json`` (SNR, sigma, the noise floor of
    the signal MAE) and ``metrics/maps/<method>_<metric>.nii.gz`` (mean over replicates).
    Skips the work when ``metrics.csv`` is newer than the models, unless ``force``.

    Returns
    -------
    pandas.DataFrame
        The tidy metrics table.
    """
    from helpers.scan.subject import Subject
    from helpers.judges.metrics import evaluate, mean_errors, write_error_maps

    subject_dir = Path(subject_dir)
    out = subject_dir / "metrics"
    table_path = out / "metrics.csv"
    trained = subject_dir / "models" / "training.json"
    _, models = _trained_models(subject_dir)
    newest = max([p.stat().st_mtime for p in models.values()] + [trained.stat().st_mtime, (subject_dir / "subject.npz").stat().st_mtime])
    if not force and table_path.is_file() and table_path.stat().st_mtime >= newest:
        return read_table(table_path)
    subject = Subject.load(subject_dir)
    # the table names the subject by where its results live: results/<dataset>/<subject>/
    subject.info.update(dataset=subject_dir.parent.name, subject=subject_dir.name)
    recon = {key: _Reconstruction(p, subject.attenuation, batch_size) for key, p in models.items()}
    # the table is the reconstruction judge's score: judge voxels only; the maps cover every voxel
    table, errors = evaluate(subject, recon, rows=subject.judge if subject.is_split else None)
    write_error_maps(subject, mean_errors(errors), out / "maps")
    save_json(
        {
            "snr": subject.snr,
            "sigma": getattr(subject, "sigma", None),
            "snr_method": subject.snr_method,
            "noise_floor": getattr(subject, "noise_floor", None),
            "noise_floor_method": "sqrt(2/pi) x mean over brain voxels of sigma/S0 (Gaussian approximation)",
        },
        out / "noise.json",
    )
    save_csv(table, table_path)  # last: its presence marks the evaluation as complete
    return table


JUDGE_TABLES = ("judges", "floor", "bootstrap", "features", "known_answer", "known_answer_scores", "mixtures",
                "separability", "noise_check", "ladder", "ladder_scores", "validation")
"""Tables :func:`judge_subject` writes in ``judges/`` (CSV), with ``check.json`` last; the
per-voxel maps go to ``judges/maps/<method>_p_real.nii.gz``."""

_RESULT_FIELDS = {"known_answer": "known", "known_answer_scores": "scores", "noise_check": "noise"}


def judge_subject(subject_dir, *, force=False, n_judge=None, progress=None):
    """Every judge on the real scan and the known-answer check (:mod:`helpers.judges.panel`).

    ``n_judge`` (voxels per judge set and classifier) defaults to the training profile's
    ``judge_voxels`` (2,000; the quick profile 500). Reads the subject and every trained
    model; writes ``judges/<table>.csv`` for each of
    :data:`JUDGE_TABLES` and ``judges/check.json`` (settings, seconds per stage), which
    marks the step complete. Skips the work when ``check.json`` is newer than the models,
    unless ``force``.

    Returns
    -------
    dict
        Table name -> DataFrame (read back when skipped).
    """
    from helpers.judges.autoencoder import load_model
    from helpers.judges.panel import LADDER_FAMILIES, JudgePanel, known_answer_check, ladder_recipe, train_ladder
    from helpers.scan.subject import Subject

    subject_dir = Path(subject_dir)
    out = subject_dir / "judges"
    done = out / "check.json"
    training, paths = _trained_models(subject_dir)
    newest = max([p.stat().st_mtime for p in paths.values()] + [(subject_dir / "models" / "training.json").stat().st_mtime])
    if not force and done.is_file() and done.stat().st_mtime >= newest and all(
            (out / f"{name}.csv").is_file() for name in JUDGE_TABLES):
        # the tables name the subject by where its results live (a copied folder is renamed)
        ds, sid = subject_dir.parent.name, subject_dir.name
        tables = {name: read_table(out / f"{name}.csv") for name in JUDGE_TABLES}
        return {name: t.assign(dataset=ds, subject=sid) if {"dataset", "subject"} <= set(t.columns) else t
                for name, t in tables.items()}
    started = time.perf_counter()
    subject = Subject.load(subject_dir)
    ds, sid = subject_dir.parent.name, subject_dir.name
    subject.info.update(dataset=ds, subject=sid)
    specs = {method_name(m): m for m in training["methods"]}
    models = {key: load_model(p) for key, p in paths.items()}
    profile = training.get("profile", {})
    if n_judge is None:  # the profile's (a quick smoke test judges fewer voxels)
        n_judge = int(profile.get("judge_voxels", DEFAULTS["judge_voxels"]))
    settings = dict(seed=int(training["seed"]), snr=training["snr"], min_pool=training["min_pool"],
                    wm_fa_min=training["wm_fa_min"], n_judge=n_judge)
    panel = JudgePanel(subject, models, specs, **settings)
    t_panel = time.perf_counter() - started
    t = time.perf_counter()
    ladder_panel, recipe = None, None
    if profile.get("n_voxels"):
        recipe = ladder_recipe(profile)
        if progress:
            progress("training the ladders' models")
        ladder_models, ladder_specs = train_ladder(subject, LADDER_FAMILIES, recipe=recipe, seed=settings["seed"],
                                                   snr=training["snr"], noise=training.get("noise", DEFAULTS["noise"]))
        ladder_panel = JudgePanel(subject, ladder_models, ladder_specs, **settings)
    t_ladder = time.perf_counter() - t
    result = known_answer_check(panel, dataset=ds, subject=sid, progress=progress, ladder_panel=ladder_panel)
    tables = {name: getattr(result, _RESULT_FIELDS.get(name, name)) for name in JUDGE_TABLES}
    if done.exists():
        done.unlink()
    for name, frame in tables.items():
        save_csv(frame, out / f"{name}.csv")
    real = subject.judge_part()
    for name, values in result.p_real.items():
        real.save_nifti(values.astype(np.float32), out / "maps" / f"{name}_p_real.nii.gz")
    save_json(
        {
            "n_judge": panel.n_judge,
            "n_fit_voxels": subject.n_fit_voxels,
            "n_judge_voxels": subject.n_judge_voxels,
            "judge_set_noise": "per_voxel",
            "pseudo_scan_noise": "per_voxel",
            "models": len(models),
            "ladder_recipe": recipe,
            "ladder_families": list(LADDER_FAMILIES) if recipe else [],
            "seconds": {"judge sets": round(t_panel, 2), "ladder models": round(t_ladder, 2),
                        **{k: round(v, 2) for k, v in result.seconds.items()},
                        "total": round(time.perf_counter() - started, 2)},
            "training_seconds": training.get("seconds"),
        },
        done,
    )
    return tables


def _trained_models(subject_dir):
    """(training.json, {(name, replicate): model path}), checking every model is there."""
    from helpers.judges.training import model_path

    trained = subject_dir / "models" / "training.json"
    if not trained.is_file():
        raise ValueError(f"{trained}: no trained models; run notebook 03 for this subject first")
    training = load_json(trained)
    names = [method_name(m) for m in training["methods"]]
    paths = {(n, r): model_path(subject_dir, n, r) for n in names for r in range(int(training["replicates"]))}
    for (n, r), p in paths.items():
        if not p.is_file():
            raise ValueError(f"{p}: model {n} replicate {r} is missing; rerun notebook 03 for this subject")
    return training, paths


class _Reconstruction:
    """A model's reconstruction, computed when called (one in memory at a time)."""

    def __init__(self, path, attenuation, batch_size):
        self.path, self.attenuation, self.batch_size = path, attenuation, batch_size

    def __call__(self):
        from helpers.judges.autoencoder import load_model, reconstruct

        return reconstruct(load_model(self.path), self.attenuation, batch_size=self.batch_size)


def read_table(path):
    """A tidy CSV table with subject and dataset read as text (ids like 01 stay 01)."""
    return pd.read_csv(path, dtype={"subject": str, "dataset": str, "method": str})


def find_subjects(results_dir, subjects=None):
    """Subject folders of a dataset results folder (those with ``subject.json``)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ValueError(f"{results_dir}: results folder not found")
    found = sorted(p.parent for p in results_dir.glob("*/subject.json"))
    if subjects:
        by_name = {p.name: p for p in found}
        missing = [s for s in subjects if str(s) not in by_name]
        if missing:
            raise ValueError(f"{results_dir}: no results for subject(s) {missing}; found {sorted(by_name)}")
        found = [by_name[str(s)] for s in subjects]
    if not found:
        raise ValueError(f"{results_dir}: no subject folders (run notebook 01 first)")
    return found


def collect_results(results_dirs, *, subjects=None):
    """Evaluate (where not done yet) and gather every subject of every dataset folder.

    Returns
    -------
    dict with
        ``metrics``, ``diagnostics``, ``realism`` (tidy tables, :data:`COLUMNS`),
        ``skipped`` (dataset, subject, method, reason), ``noise`` (dataset, subject, snr,
        sigma, snr_method, noise_floor), ``subjects`` (dataset, subject, folder, tissue
        source, synthetic flag, tiny pools, profile), ``floors`` (dataset -> mean noise
        floor), ``profiles`` (set of profile names) and ``subject_dirs``.
    """
    from helpers.judges.training import load_diagnostics

    dirs = [d for r in results_dirs for d in find_subjects(r, subjects if len(results_dirs) == 1 else None)]
    metrics, diagnostics, realism, skipped, noise, info = [], [], [], [], [], []
    judged = {name: [] for name in JUDGE_TABLES}
    for d in dirs:
        ds, sid = d.parent.name, d.name
        metrics.append(evaluate_subject(d))
        for name, frame in judge_subject(d).items():
            judged[name].append(frame)
        diagnostics.append(load_diagnostics(d))
        if (d / "realism.csv").is_file():
            realism.append(read_table(d / "realism.csv"))
        training = load_json(d / "models" / "training.json")
        report = load_json(d / "synthetic" / "report.json") if (d / "synthetic" / "report.json").is_file() else {}
        for name, reason in {**report.get("skipped", {}), **training.get("skipped", {})}.items():
            skipped.append((ds, sid, name, reason))
        noise.append({"dataset": ds, "subject": sid, **load_json(d / "metrics" / "noise.json")})
        meta = load_json(d / "subject.json")["info"]
        tiny = [f"{t} ({p['voxels']} voxels)" for t, p in report.get("pools", {}).items() if p.get("tiny")]
        notes = [generator_note(name, g, f"{ds}/{sid}") for name, g in report.get("generators", {}).items()]
        info.append(
            {
                "dataset": ds,
                "subject": sid,
                "folder": str(d),
                "tissue_source": meta.get("tissue_source", ""),
                "synthetic": bool(meta.get("synthetic")),
                "tiny_pools": tiny,
                "generator_notes": [n for n in notes if n],
                "profile": training.get("profile", {}).get("name", ""),
            }
        )
    noise = pd.DataFrame(noise)
    return {
        "metrics": _concat(metrics),
        "diagnostics": _concat(diagnostics),
        "realism": _concat(realism),
        **{name: _concat(frames, columns=frames[0].columns if frames else None) for name, frames in judged.items()},
        "skipped": pd.DataFrame(skipped, columns=["dataset", "subject", "method", "reason"]).drop_duplicates(),
        "noise": noise,
        "subjects": pd.DataFrame(info),
        "floors": noise.groupby("dataset")["noise_floor"].mean().to_dict() if len(noise) else {},
        "profiles": sorted({i["profile"] for i in info}),
        "subject_dirs": dirs,
    }


def _concat(frames, columns=None):
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS if columns is None else columns))
    out = pd.concat(frames, ignore_index=True)
    out["subject"] = out["subject"].astype(str)
    return out


def summarise_results(results, out_dir=None):
    """The statistics of notebook 04 over :func:`collect_results`' tables.

    Returns a dict with ``stats`` (pairwise tests), ``verdict`` (closest generator per
    dataset and metric), ``verdict_without_collapsed`` (the same with collapsed models
    left out, or None when there are none), ``rank_counts``, ``collapsed`` and
    ``agreement`` (the autoencoder's ranking against the second judge's, or None).
    Writes them as CSV under ``out_dir`` when given, with the collected tables.
    """
    from helpers.judges.stats import collapsed_models, compare_methods, rank_counts, verdict

    metrics = results["metrics"]
    # every judge's scores on the real scans: the reconstruction metrics and the others
    scores = _concat([metrics, results.get("judges")])
    validation = results.get("validation")
    collapsed = collapsed_models(results["diagnostics"]) if len(results["diagnostics"]) else None
    boot, floor = results.get("bootstrap"), results.get("floor")

    def judged(table):
        return with_disagreement(with_validation(with_distance(table, boot, floor), validation))

    out = {
        "stats": compare_methods(scores),
        "verdict": judged(verdict(scores, floors=results["floors"])),
        "distances": distance_table(scores, boot, floor),
        "verdict_without_collapsed": None,
        "rank_counts": rank_counts(scores),
        "collapsed": collapsed,
        "agreement": None,
    }
    if collapsed is not None and len(collapsed):
        out["verdict_without_collapsed"] = judged(verdict(scores, floors=results["floors"], exclude=collapsed))
    two_sample = results.get("judges")
    if two_sample is not None and len(two_sample):
        from helpers.judges.realism import judges_agree

        out["agreement"] = judges_agree(metrics, two_sample)
    if out_dir is not None:
        out_dir = Path(out_dir)
        for name in ("metrics", "diagnostics", "realism", "skipped", "noise", *JUDGE_TABLES):
            if name in results:
                save_csv(results[name], out_dir / f"{name}.csv")
        for name in ("stats", "verdict", "distances", "rank_counts", "agreement"):
            if out[name] is not None:
                save_csv(out[name], out_dir / f"{name}.csv")
    return out


def _draws(boot, dataset, metric, method, column="score"):
    """(n_draws,) draws of a method's score (or floor) on a dataset: the mean over its
    subjects of each subject's draw; None without any."""
    if boot is None or not len(boot):
        return None
    sel = boot[(boot["dataset"].astype(str) == str(dataset)) & (boot["metric"] == metric) & (boot["method"] == method)]
    if sel.empty:
        return None
    wide = sel.pivot_table(index="draw", columns="subject", values=column, aggfunc="first")
    values = wide.mean(axis=1, skipna=False).to_numpy(float)
    return values if np.isfinite(values).any() else None


def _point_floor(floor, dataset, metric, method):
    """Mean over subjects of the mean over a method's replicates of the real-vs-real floor."""
    if floor is None or not len(floor):
        return np.nan
    sel = floor[(floor["dataset"].astype(str) == str(dataset)) & (floor["metric"] == metric) & (floor["method"] == method)]
    v = sel.groupby("subject")["value"].mean()
    return float(v.mean()) if len(v) else np.nan


def _interval(draws, confidence=0.95):
    if draws is None:
        return np.nan, np.nan
    d = draws[np.isfinite(draws)]
    if len(d) < 10:
        return np.nan, np.nan
    a = (1 - confidence) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


def with_distance(verdict, bootstrap, floor):
    """The verdict with the closest generator's distance: its score's interval, the judge's
    real-vs-real floor and whether the closest is realistic.

    Where the known-answer step wrote block-bootstrap draws (:mod:`helpers.judges.distance`), the
    margin's interval is the draws' 2.5-97.5 percentiles of runner-up minus best (the same
    resampled voxels for both: paired), and ``level`` says ``bootstrap``; elsewhere the
    replicate-level interval of :func:`helpers.judges.stats.verdict` stays.

    Added columns: ``score_low``, ``score_high`` (the best's 95% interval), ``real_vs_real``
    (the floor: the same judge on two halves of the scan's judge voxels), ``floor_low``,
    ``floor_high``, ``realistic`` (:func:`helpers.judges.distance.realistic`; empty without a
    floor) and ``realistic_rule``.
    """
    from helpers.judges.distance import FLOOR_METRICS, realistic, realistic_rule

    out = verdict.copy()
    new = {c: [] for c in ("score_low", "score_high", "real_vs_real", "floor_low", "floor_high", "realistic",
                           "realistic_rule")}
    for i, row in out.iterrows():
        ds, metric, best, runner = row["dataset"], row["metric"], row["best"], row["runner_up"]
        b = _draws(bootstrap, ds, metric, best) if isinstance(best, str) and best else None
        low, high = _interval(b)
        r = _draws(bootstrap, ds, metric, runner) if isinstance(runner, str) and runner else None
        if b is not None and r is not None:
            out.loc[i, ["ci_low", "ci_high"]] = _interval(r - b)
            out.loc[i, "level"] = "bootstrap"
        elif b is not None:
            out.loc[i, "level"] = "bootstrap"
        has_floor = metric in FLOOR_METRICS and isinstance(best, str) and best
        f = _point_floor(floor, ds, metric, best) if has_floor else np.nan
        f_low, f_high = _interval(_draws(bootstrap, ds, metric, best, "floor")) if has_floor else (np.nan, np.nan)
        new["score_low"].append(low)
        new["score_high"].append(high)
        new["real_vs_real"].append(f)
        new["floor_low"].append(f_low)
        new["floor_high"].append(f_high)
        new["realistic"].append(realistic(metric, row["best_mean"], f, f_high))
        new["realistic_rule"].append(realistic_rule(metric) if has_floor else "")
    for col, values in new.items():
        out[col] = pd.Series(values, index=out.index, dtype=object if col in ("realistic", "realistic_rule") else float)
    return out


def distance_table(scores, bootstrap, floor):
    """Every generator's distance per dataset and judge metric: ``dataset, metric, method,
    score`` (mean over subjects of replicate means), ``score_low, score_high`` (bootstrap
    95% interval), ``real_vs_real`` (its floor), ``realistic``."""
    from helpers.judges.distance import FLOOR_METRICS, realistic

    rows = []
    sel = scores[scores["tissue"] == "all"] if "tissue" in scores.columns else scores
    for (ds, metric, method), frame in sel.groupby(["dataset", "metric", "method"], sort=False):
        value = float(frame.groupby("subject")["value"].mean().mean())
        low, high = _interval(_draws(bootstrap, ds, metric, method))
        f = _point_floor(floor, ds, metric, method) if metric in FLOOR_METRICS else np.nan
        f_high = _interval(_draws(bootstrap, ds, metric, method, "floor"))[1] if metric in FLOOR_METRICS else np.nan
        rows.append({"dataset": ds, "metric": metric, "method": method, "score": value, "score_low": low,
                     "score_high": high, "real_vs_real": f, "realistic": realistic(metric, value, f, f_high)})
    return pd.DataFrame(rows, columns=["dataset", "metric", "method", "score", "score_low", "score_high",
                                       "real_vs_real", "realistic"])


def with_disagreement(verdict):
    """The verdict with ``disagrees``: on each validated row, the other validated judges of
    its dataset that name a different closest generator (``judge: generator``, '; '
    joined); "" when they agree or the row is not validated."""
    from helpers.report.text import judge_title

    out = verdict.copy()
    notes = []
    for _, row in out.iterrows():
        if not bool(row.get("validated")):
            notes.append("")
            continue
        others = out[(out["dataset"] == row["dataset"]) & out["validated"].astype(bool) & (out["metric"] != row["metric"])]
        notes.append("; ".join(f"{judge_title(o)}: {o['best']}" for _, o in others.iterrows()
                               if isinstance(o["best"], str) and o["best"] and o["best"] != row["best"]))
    out["disagrees"] = notes
    return out


def with_validation(verdict, validation):
    """The verdict with the columns ``judge``, ``validated`` and ``known_answer``, validated
    judges first.

    A judge metric is validated on a dataset when the known-answer check validated it on
    every subject of the dataset (:func:`helpers.judges.panel.validate`); ``known_answer`` says
    in how many known-answer cases it named the true generator, summed over subjects.
    Without a validation table (no check ran) nothing is validated.
    """
    from helpers.contract import JUDGE_OF
    from helpers.judges.panel import known_answer_sentence

    out = verdict.copy()
    out.insert(2, "judge", [JUDGE_OF.get(m, m) for m in out["metric"]])
    validated, sentences = [], []
    for ds, metric in zip(out["dataset"], out["metric"]):
        rows = pd.DataFrame() if validation is None or not len(validation) else validation[
            (validation["dataset"].astype(str) == str(ds)) & (validation["metric"] == metric)]
        if len(rows):
            validated.append(bool(rows["validated"].astype(bool).all()))
            totals = rows[[c for c in ("named", "acceptable", "cases", "mixtures_ok", "mixtures", "ladders_ok", "ladders")
                           if c in rows.columns]].sum()
            sentence = known_answer_sentence(totals)
            if len(rows) > 1:
                sentence = sentence.replace("on this scan", f"over {len(rows)} subjects")
            sentences.append(sentence)
        else:
            validated.append(False)
            sentences.append("no known-answer check")
    out.insert(3, "validated", validated)
    out["known_answer"] = sentences
    first = {d: i for i, d in enumerate(pd.unique(out["dataset"]))}
    keys = out.assign(_d=out["dataset"].map(first), _v=~out["validated"].astype(bool))
    return keys.sort_values(["_d", "_v"], kind="stable").drop(columns=["_d", "_v"]).reset_index(drop=True)


def judge_table(judges, *, confidence=0.95):
    """Every judge's score per generator on the real scans: mean with its 95% interval.

    The interval is Student's t over the (subject, replicate) values: with one subject it
    carries training and sampling randomness (each replicate has its own synthetic set),
    not subject variability.

    Returns
    -------
    pandas.DataFrame
        Index (dataset, method); one text column per judge metric, ``mean [low, high]``.
    """
    from scipy import stats as sps

    rows = {}
    for (dataset, method, metric), frame in judges.groupby(["dataset", "method", "metric"], sort=False):
        v = frame["value"].to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v) > 1 and np.ptp(v) > 0:
            low, high = sps.t.interval(confidence, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
            text = f"{v.mean():.4g} [{low:.4g}, {high:.4g}]"
        else:
            text = f"{v.mean():.4g}" if len(v) else ""
        rows.setdefault((dataset, method), {})[metric] = text
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["dataset", "method"])


def replicate_table(metrics, *, tissue="all"):
    """method x metric table of mean ± sd over every (subject, replicate) value, as text,
    for the README and the report (the numbers come from the run's own tables)."""
    sel = metrics[metrics["tissue"] == tissue]
    rows = {}
    for (dataset, method), frame in sel.groupby(["dataset", "method"], sort=False):
        row = {}
        for metric in METRICS:
            v = frame.loc[frame["metric"] == metric, "value"].to_numpy(float)
            row[metric] = f"{v.mean():.4g} ± {v.std(ddof=1):.2g}" if len(v) > 1 else (f"{v[0]:.4g}" if len(v) else "")
        rows[(dataset, method)] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["dataset", "method"])


def verdict_text(results, summary):
    """The verdict-first Markdown of the summary report (:func:`helpers.report.text.verdict_markdown`)
    from :func:`collect_results` and :func:`summarise_results`."""
    from helpers.report.text import verdict_markdown

    subjects = results["subjects"]
    profiles = results["profiles"]
    return verdict_markdown(
        summary["verdict"],
        profile=profiles[0] if len(profiles) == 1 else ", ".join(profiles),
        n_subjects=subjects.groupby("dataset")["subject"].nunique().to_dict(),
        skipped=results["skipped"],
        collapsed=_collapsed_detail(results["diagnostics"]),
        tiny_pools=[f"{r.dataset} / {r.subject}: {', '.join(r.tiny_pools)}" for r in subjects.itertuples() if r.tiny_pools],
        generator_notes=list(dict.fromkeys(line for lines in subjects.get("generator_notes", []) for line in lines)),
        approximate_tissue=sorted(subjects.loc[subjects["tissue_source"].str.startswith("approximate"), "subject"]),
        synthetic=sorted(subjects.loc[subjects["synthetic"], "subject"]),
        realism_agreement=None if summary["agreement"] is None else dict(zip(summary["agreement"]["dataset"], summary["agreement"]["sentence"])),
        verdict_without_collapsed=summary["verdict_without_collapsed"],
    )


def generator_note(name, description, where):
    """A report line for a generator whose data depends on a file or on the subject
    (:func:`helpers.generators.simulation.describe_generator`), else ""."""
    if description.get("kind") == "library":
        return (f"{name}: a library of {description['unique_voxels']:,} unique voxels ({description['file']}; "
                f"S0: {description['s0']}); each replicate draws from it with replacement")
    ranges = description.get("ranges_mm2_per_s")
    if ranges:
        mm = lambda r: f"{r[0] * 1e3:.2f}-{r[1] * 1e3:.2f}"  # noqa: E731
        return (f"{name} on {where}: WM d_par {mm(ranges['wm_d_par'])}, extra-axonal d_perp {mm(ranges['wm_d_perp'])}, "
                f"GM {mm(ranges['gm_d'])}, CSF {ranges['csf_d'] * 1e3:.2f} (x1e-3 mm²/s; {description['from']})")
    return ""


def _collapsed_detail(diagnostics):
    """Collapsed models with their validation loss over their method's median."""
    if not len(diagnostics):
        return None
    wide = diagnostics.pivot_table(index=["dataset", "subject", "method", "replicate"], columns="metric", values="value").reset_index()
    if "collapsed" not in wide:
        return None
    median = wide.groupby(["dataset", "subject", "method"])["val_loss"].transform("median")
    wide["ratio"] = wide["val_loss"] / median
    return wide.loc[wide["collapsed"] > 0, ["dataset", "subject", "method", "replicate", "val_loss", "ratio"]].reset_index(drop=True)

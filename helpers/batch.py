"""Run the four notebooks for a dataset: per subject 01-03 (and the evaluation), then 04.

    python -m helpers.batch CONFIG [--profile quick|paper] [--subjects ID ...] [--jobs N]
                                   [--out DIR] [--force] [--scheduler ADDRESS|local]

Executed notebooks (and their HTML renderings) land in ``<out>/<dataset>/<subject>/``
and ``<out>/<dataset>/summary/``. A step whose executed notebook exists is skipped on
rerun unless ``--force``. Every file is written under a temporary name and renamed, so a
killed run leaves no half-written result; leftovers of such a run are removed at the
next start. One subject failing does not stop the others: failures are listed at the
end with the path of the failed notebook, and the exit status is 1.

Subjects run one after another by default, ``--jobs N`` at a time with ``--jobs``, or on
a Dask cluster with ``--scheduler``: ``local`` starts a ``LocalCluster`` of ``--jobs``
workers, any other value is the address of a running scheduler (for example one started
by ``dask-jobqueue`` on SLURM or PBS; see the README).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm  # text bars: they render in papermill output and in terminals alike

from helpers.config import NOTEBOOK_DIR, load_config, load_profile
from helpers.io import atomic_path

__all__ = ["SubjectResult", "run_notebook", "run_subject", "run_summary", "run_dataset", "main"]

SUBJECT_NOTEBOOKS = ("01_load_data", "02_simulate", "03_train_autoencoder")
SUMMARY_NOTEBOOK = "04_results"


@dataclass
class SubjectResult:
    """What happened to one subject (or to the summary)."""

    subject: str
    ok: bool
    steps: list = field(default_factory=list)  # (step, "ran" | "skipped", seconds)
    failed_step: str = ""
    failed_notebook: str = ""
    error: str = ""


def render_html(notebook_path, html_path):
    """Render an executed notebook to standalone HTML (atomically)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    with atomic_path(html_path) as tmp:
        tmp.write_text(body, encoding="utf-8")


def _executed_parameters(path):
    """The parameters an executed notebook ran with (papermill's provenance), or None."""
    import nbformat

    try:
        return nbformat.read(path, as_version=4).metadata.get("papermill", {}).get("parameters")
    except Exception:  # unreadable: treat as not done
        return None


def _kernel_name():
    """The project's kernel (``make`` installs ``synthqa`` into .venv), else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "synthqa" if "synthqa" in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebook(name, out_dir, parameters, *, force=False, progress=False):
    """Execute ``notebooks/<name>.ipynb`` with papermill into ``out_dir``.

    The executed notebook is written to a temporary name, rendered to HTML, and renamed
    once both succeeded; its presence marks the step as done. A step is skipped when its
    executed notebook exists *and* ran with the same parameters (papermill keeps them in
    the notebook's metadata); changed parameters (another profile, seed, method list)
    rerun it. On failure the partly executed notebook is kept as
    ``<name>.failed.ipynb`` and the error is re-raised with that path attached.

    Returns
    -------
    "ran" or "skipped"
    """
    import json

    import papermill as pm

    out_dir = Path(out_dir)
    out = out_dir / f"{name}.ipynb"
    failed = out_dir / f"{name}.failed.ipynb"
    same = json.loads(json.dumps(parameters)) == _executed_parameters(out) if out.is_file() else False
    if same and not force and out.with_suffix(".html").is_file():
        return "skipped"
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        try:
            pm.execute_notebook(
                str(NOTEBOOK_DIR / f"{name}.ipynb"),
                str(tmp),
                parameters=parameters,
                kernel_name=_kernel_name(),
                cwd=str(NOTEBOOK_DIR),
                progress_bar=progress,
            )
        except Exception as e:
            if tmp.is_file():
                os.replace(tmp, failed)
            e.failed_notebook = str(failed)
            raise
        render_html(tmp, out.with_suffix(".html"))
    failed.unlink(missing_ok=True)
    return "ran"


def remove_stale_temporaries(folders):
    """Delete temporary files left by a killed run (``.<name>.tmp-*``) in ``folders``
    (this run's subject folders and summary only: another run may be writing elsewhere)."""
    for folder in map(Path, folders):
        if folder.is_dir():
            for p in folder.rglob(".*.tmp-*"):
                p.unlink(missing_ok=True)


def run_subject(config_path, subject, *, profile, out, force=False):
    """Notebooks 01-03 and the evaluation for one subject; never raises.

    This is the unit of work sent to a thread or a Dask worker.
    """
    from helpers.pipeline import evaluate_subject

    config = load_config(config_path)
    subject_dir = config.results_dir(out) / str(subject)
    result = SubjectResult(subject=str(subject), ok=True)
    common = {"subject_dir": str(subject_dir), "methods": list(config.methods)}
    params = {
        "01_load_data": {"config": str(Path(config_path).resolve()), "subject": str(subject), "out_dir": str(subject_dir)},
        "02_simulate": {**common, "profile": profile, "seed": config.seed, "snr": config.snr, "min_pool": config.min_pool},
        "03_train_autoencoder": {**common, "profile": profile, "seed": config.seed},
    }
    step = ""
    try:
        for step in SUBJECT_NOTEBOOKS:
            t = time.perf_counter()
            status = run_notebook(step, subject_dir, params[step], force=force)
            result.steps.append((step, status, time.perf_counter() - t))
            force = force or status == "ran"  # later steps depend on this one's output
        step = "evaluate"
        t = time.perf_counter()
        evaluate_subject(subject_dir, config.methods, force=force)
        result.steps.append((step, "ran", time.perf_counter() - t))
    except Exception as e:  # one subject failing must not stop the others
        result.ok = False
        result.failed_step = step
        result.failed_notebook = getattr(e, "failed_notebook", "")
        result.error = "".join(traceback.format_exception_only(type(e), e)).strip()
    return result


def run_summary(config_path, subjects, *, out, force=True):
    """Notebook 04 over the dataset's evaluated subjects; never raises."""
    config = load_config(config_path)
    summary_dir = config.results_dir(out) / "summary"
    result = SubjectResult(subject="summary", ok=True)
    try:
        t = time.perf_counter()
        params = {
            "results_dirs": [str(config.results_dir(out))],
            "subjects": [str(s) for s in subjects],
            "methods": list(config.methods),
            "out_dir": str(summary_dir),
        }
        status = run_notebook(SUMMARY_NOTEBOOK, summary_dir, params, force=force)
        result.steps.append((SUMMARY_NOTEBOOK, status, time.perf_counter() - t))
    except Exception as e:
        result.ok = False
        result.failed_step = SUMMARY_NOTEBOOK
        result.failed_notebook = getattr(e, "failed_notebook", "")
        result.error = "".join(traceback.format_exception_only(type(e), e)).strip()
    return result


def _map_subjects(config_path, subjects, *, profile, out, force, jobs, scheduler):
    """Run ``run_subject`` for every subject: threads, or Dask when ``scheduler`` is set.
    Yields results as they complete."""
    kwargs = dict(profile=profile, out=out, force=force)
    if scheduler:
        from helpers.cluster import dask_map

        yield from dask_map(run_subject, config_path, subjects, scheduler=scheduler, jobs=jobs, **kwargs)
        return
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_subject, config_path, s, **kwargs): s for s in subjects}
        for fut in as_completed(futures):
            yield fut.result()


def run_dataset(config_path, *, profile=None, subjects=None, jobs=1, out=None, force=False, scheduler=None):
    """Run the whole pipeline for a dataset config; returns the list of results
    (subjects first, the summary last)."""
    # absolute paths: notebooks run in notebooks/, workers anywhere
    config_path = Path(config_path).resolve()
    out = Path(out).resolve() if out else None
    config = load_config(config_path)
    profile = profile or config.profile
    load_profile(profile)
    all_ids = config.subject_ids
    subjects = [str(s) for s in (subjects or all_ids)]
    unknown = [s for s in subjects if s not in all_ids]
    if unknown:
        raise ValueError(f"{config.path}: subject(s) {unknown} not in the config; subjects: {all_ids}")
    dataset_dir = config.results_dir(out)
    remove_stale_temporaries([dataset_dir / s for s in subjects] + [dataset_dir / "summary"])
    results = []
    with tqdm(total=len(subjects), desc=f"{config.dataset}: subjects", unit="subject") as bar:
        for res in _map_subjects(config_path, subjects, profile=profile, out=out, force=force, jobs=jobs, scheduler=scheduler):
            results.append(res)
            bar.set_postfix_str(f"{res.subject} {'ok' if res.ok else 'FAILED'}")
            bar.update()
    # the summary covers every evaluated subject of the dataset, not only this run's
    evaluated = [s for s in all_ids if (dataset_dir / s / "metrics" / "metrics.csv").is_file()]
    if evaluated:
        results.append(run_summary(config_path, evaluated, out=out))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="dataset config YAML (configs/*.yaml)")
    parser.add_argument("--profile", help="quick or paper (default: the config's, else paper)")
    parser.add_argument("--subjects", nargs="+", help="subject ids (default: all in the config)")
    parser.add_argument("--jobs", type=int, default=1, help="subjects run at once (threads or Dask workers)")
    parser.add_argument("--out", help="results folder (default: results/)")
    parser.add_argument("--force", action="store_true", help="rerun steps that are already done")
    parser.add_argument("--scheduler", help="Dask scheduler address, or 'local' for a LocalCluster")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        results = run_dataset(
            args.config,
            profile=args.profile,
            subjects=args.subjects,
            jobs=args.jobs,
            out=args.out,
            force=args.force,
            scheduler=args.scheduler,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    print(f"\nresults in {config.results_dir(args.out)} ({time.perf_counter() - t0:.0f} s)")
    for r in results:
        steps = ", ".join(f"{s} {st} {sec:.0f}s" for s, st, sec in r.steps)
        print(f"  {r.subject}: {'ok' if r.ok else 'FAILED'} ({steps})")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"\n{len(failed)} failed:", file=sys.stderr)
        for r in failed:
            where = r.failed_notebook or r.failed_step
            print(f"  {r.subject}: {r.failed_step} failed ({where}): {r.error.splitlines()[-1] if r.error else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

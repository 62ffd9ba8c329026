"""The ``synthqa`` command.

    synthqa run CONFIG [CONFIG ...] [--profile quick|paper] [--subjects ID ...] [--jobs N]
                       [--out DIR] [--force] [--scheduler ADDRESS|local]
    synthqa check CONFIG [CONFIG ...] [--profile NAME] [--subjects ID ...]
    synthqa export CONFIG --results DIR --method NAME --voxels N --out FILE.npz
                   [--subject ID] [--seed S] [--bval FILE --bvec FILE] [--snr auto|none|X]
                   [--noise global|per_voxel] [--chunk N]
    synthqa --version

``run`` is :func:`helpers.run.batch.run_command` (also ``python -m helpers.run.batch``); ``check``
validates the configs and every subject's input files without reading image data, in
seconds, and is what ``run`` does first; ``export`` writes one generator's synthetic voxels
and their ground truth for one subject of a results folder to an ``.npz``
(:mod:`helpers.run.export`, docs/export.md). Exit status: 0 ok, 1 a subject failed (``export``:
the file could not be written), 2 a bad config or input.
"""

from __future__ import annotations

import argparse
import sys

from helpers import __version__
from helpers.run.batch import RUN_EPILOG, add_run_arguments, check_command, command_line, interruptible, run_command
from helpers.run.export import add_export_arguments

__all__ = ["build_parser", "main"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="synthqa",
        description="Which synthetic diffusion MRI data resembles a real scan? Autoencoders trained on "
                    "synthetic voxels from each generator, judged on the real ones.",
    )
    parser.add_argument("--version", action="version", version=f"synthqa {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", help="check the inputs, run every subject's notebooks, then the summary",
        description="Check the inputs, run the notebooks for every subject, then the summary report.",
        epilog=RUN_EPILOG,
    )
    add_run_arguments(run)
    run.set_defaults(handler=run_command)
    check = commands.add_parser(
        "check", help="validate configs and every subject's input files (seconds; nothing runs)",
        description="Validate dataset configs and every subject's input files (headers, gradient tables, "
                    "shells, masks) without reading image data. Exit 0 when all is well, 2 otherwise.",
    )
    check.add_argument("configs", nargs="+", metavar="CONFIG", help="dataset config YAML (configs/*.yaml)")
    check.add_argument("--profile", help="profile to validate (default: each config's)")
    check.add_argument("--subjects", nargs="+", metavar="ID", help="subject ids (default: every subject)")
    check.set_defaults(handler=check_command)
    export = commands.add_parser(
        "export", help="write one generator's synthetic voxels and their ground truth to an .npz",
        description="Simulate N voxels of one generator for one subject of a results folder (its gradient "
                    "table, tissue pools and noise, or another gradient table) and write the noisy and clean "
                    "signals with every voxel's ground truth to an .npz, in chunks of bounded memory "
                    "(docs/export.md). Exit 0 written, 1 the file could not be written, 2 bad input.",
    )
    add_export_arguments(export)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.command_line = command_line("synthqa", argv)
    return interruptible(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())

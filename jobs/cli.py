"""``perceiver-jobs``: one command line for every batch job (also ``python -m jobs``).

    perceiver-jobs video  --input VIDEOS --output OUT [--task both|autoencode|classify]
    perceiver-jobs flow   --input FRAMES_OR_VIDEOS --output OUT
    perceiver-jobs images --input IMAGES --output OUT [--labels-file labels.csv]
    perceiver-jobs text   --input TEXTS --output OUT --task classify|fill-mask
    perceiver-jobs train  ...            (from jobs.train, when installed)

Each subcommand module has ``add_arguments(parser)`` and ``run(args, argv)``. Exit status: 0 when every
input is accounted for (error rows included), 2 for bad flags or inputs, 1 when the job fails.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMANDS = {
    "video": ("jobs.video", "autoencode and/or classify video clips (multimodal Perceiver)"),
    "flow": ("jobs.flow", "optical flow over frame pairs or consecutive video frames"),
    "images": ("jobs.images", "image classification with top-k labels"),
    "text": ("jobs.text", "text classification or fill-mask (byte-level Perceiver)"),
    "train": ("jobs.train", "train or fine-tune a Perceiver (Ray Train)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceiver-jobs", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:  # the module exists but one of its imports is missing: a real error
                raise
            continue  # not installed (e.g. jobs.train before the training issue lands)
        subparser = sub.add_parser(name, help=help_text, description=module.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(subparser)
        subparser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from jobs.common import UsageError
    from pipelines.labels import LabelsFileError
    from pipelines.model_workers import ModelLoadError
    from pipelines.ray_runtime import ResourceError
    from pipelines.runner import OutputError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = args._module
    try:
        if args.command == "train":
            result = module.run(args)
            return result if isinstance(result, int) else 0
        summary = module.run(args, ["perceiver-jobs", *argv])
    except (UsageError, LabelsFileError, ModelLoadError, ResourceError, OutputError, FileNotFoundError,
            NotADirectoryError) as e:
        print(f"perceiver-jobs {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        if "no inputs found" in str(e):  # manifest builders: empty folder / no matching files
            print(f"perceiver-jobs {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise
    return 0 if summary.complete else 1


if __name__ == "__main__":
    sys.exit(main())

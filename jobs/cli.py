"""``perceiver-jobs``: one command line for every batch job (also ``python -m jobs``).

    perceiver-jobs video  --input VIDEOS --output OUT [--task both|autoencode|classify]
    perceiver-jobs flow   --input FRAMES_OR_VIDEOS --output OUT
    perceiver-jobs images --input IMAGES --output OUT [--labels-file labels.csv]
    perceiver-jobs text   --input TEXTS --output OUT --task classify|fill-mask
    perceiver-jobs train  ...            (from jobs.train, when installed)

Each subcommand module has ``add_arguments(parser)`` and ``run(args, argv)``. Exit status: 0 when every
input is accounted for (error rows included), 2 for bad flags or inputs, 1 when the job fails, 130 after
Ctrl-C (SIGINT) and 143 after SIGTERM (``ray job stop``, Kubernetes, ``kill``).

Help: every subcommand's ``--help`` lists its flags with their defaults, as plain text; a mistyped flag gets
that subcommand's usage and a suggestion (exit status 2).

Interrupted jobs: a signal stops the job the way Ctrl-C does. The shards committed so far stay (each part
file is whole or absent), the driver shuts down the Ray it started, and one line says how far it got; the
same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

SUBCOMMANDS = {
    "video": ("jobs.video", "autoencode and/or classify video clips (multimodal Perceiver)"),
    "flow": ("jobs.flow", "optical flow over frame pairs or consecutive video frames"),
    "images": ("jobs.images", "image classification with top-k labels"),
    "text": ("jobs.text", "text classification or fill-mask (byte-level Perceiver)"),
    "train": ("jobs.train", "train or fine-tune a Perceiver (Ray Train)"),
}


_MARKUP = [
    (re.compile(r":[a-z]+(?::[a-z]+)?:`([^`]*)`"), r"\1"),  # rst roles: :class:`x`, :py:func:`x`
    (re.compile(r"``([^`]*)``"), r"\1"),  # rst literals
    (re.compile(r"`([^`]*)`"), r"\1"),  # markdown code, rst default role
    (re.compile(r"\*\*([^*]+)\*\*"), r"\1"),  # bold
    (re.compile(r"::$", re.MULTILINE), ":"),  # rst literal block marker
]


def plain(text: str | None) -> str:
    """``text`` without docstring markup (rst roles and literals, backticks, bold), for the terminal."""
    text = text or ""
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their lines (the examples), markup is stripped, and every flag with a value shows its
    default. Flags off by default (store_true) and without a default (None) show none."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain(action.help)
        default = action.default
        if ("%(default)" in text or "(default" in text or not action.option_strings or default is None
                or default is False or default is argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an unknown flag is reported here, with this subcommand's usage and the nearest
    known flags, instead of by the top-level parser with its usage (argparse's default for subparsers)."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        unknown = self._first_unknown_flag(list(sys.argv[1:] if args is None else args))
        if unknown is not None:
            known = [o for o in self._option_string_actions if o.startswith("--")]
            close = difflib.get_close_matches(unknown, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            self.error(f"unrecognized argument: {unknown}{hint}; see {self.prog} --help")
        return super().parse_known_args(args, namespace)

    def _first_unknown_flag(self, args: list[str]) -> str | None:
        for arg in args:
            if arg == "--":
                return None
            if not arg.startswith("-") or arg == "-" or _NUMBER.match(arg):
                continue
            name = arg.split("=", 1)[0]
            if name in self._option_string_actions:
                continue
            if name.startswith("--") and self.allow_abbrev and \
                    any(o.startswith(name) for o in self._option_string_actions):
                continue  # an abbreviation (argparse reports an ambiguous one itself)
            return name
        return None


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Flags declared without help text still show their default in --help."""
    for action in parser._actions:
        if action.help is None and action.option_strings:
            action.help = ""
            if not (action.default is None or action.default is False or action.default == []):
                action.help = "default: %(default)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceiver-jobs", description=plain(__doc__.split("\n\n")[0]),
                                     formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=SubcommandParser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:  # the module exists but one of its imports is missing: a real error
                raise
            continue  # not installed (e.g. jobs.train before the training issue lands)
        subparser = sub.add_parser(name, help=help_text, description=module.__doc__, formatter_class=HelpFormatter)
        module.add_arguments(subparser)
        _show_defaults(subparser)
        subparser.set_defaults(_module=module)
    return parser


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM, as KeyboardInterrupt is by SIGINT: every ``finally`` on the way
    (commit log flush, Ray shutdown) runs, no ``except Exception`` swallows it, and Ray's own signal checks
    (which only know KeyboardInterrupt) pass it on."""


_received: list[int] = []  # the signals received while the job ran (Ray may re-raise a bare KeyboardInterrupt)


def _interrupt(signum: int, frame) -> None:
    _received.append(signum)
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While the job runs, SIGINT and SIGTERM raise ``Interrupted``; the previous handlers come back afterwards.

    ``ray.init`` installs its own driver handler for SIGTERM (``sys.exit(signum)``), so once Ray runs a
    SIGTERM arrives as ``SystemExit(15)``; ``main`` treats that the same way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _received.clear()
    for sig in previous:
        signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_of(error: BaseException) -> int | None:
    """The signal that stopped the job, or None when ``error`` is no interruption."""
    if isinstance(error, KeyboardInterrupt):
        return _received[0] if _received else signal.SIGINT
    if isinstance(error, SystemExit) and error.code == signal.SIGTERM:  # Ray's driver SIGTERM handler
        return signal.SIGTERM
    return None


def _progress(output: str | None) -> str:
    """"; N of M shards committed; rerun ..." for a batch job's output, read back after the interruption."""
    if output is None:  # train keeps its own checkpoints
        return ""
    return f"; {_committed(output)}; rerun the same command to resume"


def _committed(output: str) -> str:
    try:
        from pipelines import storage
        from pipelines.batch import runner, sink, work_plan

        out = storage.resolve(output)
        try:
            recorded = json.loads(out.join(runner.JOB_FILE).read_bytes())
        except FileNotFoundError:
            return "0 shards committed (interrupted while listing the inputs)"
        total = work_plan.PlanInfo(**recorded["plan"]).num_shards
        done = sum(1 for k in sink.committed_shards(out) if k < total)
        return f"{done} of {total} shards committed"
    except Exception as e:  # noqa: BLE001 - the message must still be printed
        return f"progress unknown ({type(e).__name__}: {e})"


def main(argv: list[str] | None = None) -> int:
    from jobs.common import UsageError
    from pipelines.batch.model_workers import ModelLoadError
    from pipelines.batch.ray_runtime import ResourceError
    from pipelines.batch.runner import OutputError
    from pipelines.readers.labels import LabelsFileError
    from pipelines.storage import OutputWriteError, StorageError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = args._module
    try:
        with _signals_interrupt():
            if args.command == "train":
                result = module.run(args)
                return result if isinstance(result, int) else 0
            summary = module.run(args, ["perceiver-jobs", *argv])
    except (KeyboardInterrupt, SystemExit) as e:
        signum = _signal_of(e)
        if signum is None:
            raise
        name = signal.Signals(signum).name
        output = getattr(args, "output", None) if args.command != "train" else None
        print(f"perceiver-jobs {args.command}: interrupted ({name}){_progress(output)}", file=sys.stderr)
        return 128 + signum
    except (UsageError, LabelsFileError, ModelLoadError, ResourceError, OutputError, FileNotFoundError,
            NotADirectoryError, StorageError) as e:
        print(f"perceiver-jobs {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OutputWriteError as e:
        print(f"perceiver-jobs {args.command}: error: {e}; inputs not committed stay pending for a rerun",
              file=sys.stderr)
        return 1
    except ValueError as e:
        if "no inputs found" in str(e):  # manifest builders: empty folder / no matching files
            print(f"perceiver-jobs {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise
    if summary.all_failed:
        print(f"perceiver-jobs {args.command}: error: {summary.failure_reason()}", file=sys.stderr)
        return 1
    return 0 if summary.complete else 1


if __name__ == "__main__":
    sys.exit(main())

"""``perceiver-jobs text``: byte-level Perceiver over text: classification (top-k) or fill-mask.

    perceiver-jobs text --task fill-mask --input notes/ --output out/fill --model language-perceiver/
    perceiver-jobs text --task classify --input sst.txt --labelled-lines --output out/sst --model sst-model/
    perceiver-jobs text --task fill-mask --input s3://corpus/web/ --output s3://results/fill --model ckpt/

Inputs: ``.txt`` (one document per line, or per file with ``--per-file``), ``.jsonl`` (``--field``),
Parquet (``--column``). A record that cannot be read (bad JSON, missing, null or non-string field or
value, bad label) becomes an error row. Invalid UTF-8 is not an error: the model reads bytes. A UTF-16
file is one ``utf16_unsupported`` error row when read per line, and is decoded with ``--per-file``.
Long documents: classification is truncated to the model's positions (``truncated`` is set); fill-mask runs
window by window, so any length works. In fill-mask, every ``[MASK]`` in the text is one masked byte:
write ``[MASK][MASK][MASK]`` for a three-byte gap.

The corpus is never read on the driver: the manifest holds text items (byte ranges of large files,
whole small files, Parquet row-group runs; ``pipelines.readers.text_items``) and the workers find the documents in
them. Document ids are those of ``stable_id(relpath, line index)`` whatever the cutting. ``--limit N`` keeps
the first N documents.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from jobs.common import (
    CommonConfig,
    UsageError,
    add_common_arguments,
    check_output,
    common_config,
    execute,
)
from pipelines.readers.text_items import ReadOptions

MAX_SHARD_ITEMS = 4  # items are up to RANGE_BYTES of text: a part holds at most ~4 x 64 MiB of documents


@dataclass(frozen=True)
class TextConfig:
    common: CommonConfig
    task: str
    read: ReadOptions
    top_k: int
    max_length: int | None
    num_labels: int | None
    range_bytes: int | None  # None: text_items.RANGE_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, default_model=None, default_batch_size=8)
    g = parser.add_argument_group("text")
    g.add_argument("--task", choices=("classify", "fill-mask"), required=True)
    g.add_argument("--per-file", action="store_true", help=".txt: one document per file (default: per line)")
    g.add_argument("--field", default="text", help=".jsonl: the text field")
    g.add_argument("--column", default="text", help="Parquet: the text column")
    g.add_argument("--labelled-lines", action="store_true",
                   help='.txt lines are "<label index> <text>" (SST/TREC style): top-1/top-5 accuracy')
    g.add_argument("--top-k", type=int, default=5, help="predictions kept per document (classify)")
    g.add_argument("--max-length", type=int, help="bytes per model call incl. [CLS]/[SEP] (default: the model's)")
    g.add_argument("--num-labels", type=int, help="--random-init classify: number of classes (default 2)")
    g.add_argument("--range-bytes", type=int, default=None, help=argparse.SUPPRESS)  # item size (tests, tuning)


def config_from_args(args: argparse.Namespace) -> TextConfig:
    if args.max_length is not None and args.max_length < 3:
        raise UsageError("--max-length must be >= 3")
    if args.num_labels is not None and not args.random_init:
        raise UsageError("--num-labels only applies to --random-init (a checkpoint knows its labels)")
    if args.per_file and args.labelled_lines:
        raise UsageError("--per-file and --labelled-lines exclude each other (a label belongs to a line)")
    if args.range_bytes is not None and args.range_bytes < 1:
        raise UsageError("--range-bytes must be >= 1")
    if args.top_k < 1:
        raise UsageError("--top-k must be >= 1")
    common = common_config(args)
    if args.task == "classify" and common.model.random_init:
        common = replace(common, model=replace(common.model, head="PerceiverForSequenceClassification",
                                               num_labels=args.num_labels or 2))
    read = ReadOptions(per_file=args.per_file, labelled=args.labelled_lines, field=args.field, column=args.column)
    return TextConfig(common=common, task=args.task, read=read, top_k=args.top_k, max_length=args.max_length,
                      num_labels=args.num_labels, range_bytes=args.range_bytes)


def plan_text_items(config: TextConfig, range_bytes: int):
    """The manifest rows (``text_items.ITEM_SCHEMA``), streamed; planning problems become usage errors."""
    from pipelines.readers import text_items

    c = config.common
    try:
        yield from text_items.plan_items(c.inputs, config.read, exclude=c.output, limit=c.limit,
                                         range_bytes=range_bytes)
    except text_items.TextInputError as e:
        raise UsageError(str(e)) from e


def build_job(config: TextConfig):
    """Validate the model (no Ray yet) and describe the job; the inputs are planned when the job runs."""
    from perceiver_core import PerceiverForMaskedLM, PerceiverForSequenceClassification
    from pipelines.batch import schemas
    from pipelines.batch.model_workers import validate_model
    from pipelines.batch.runner import Job
    from pipelines.readers import text_items
    from pipelines.stages.text import FillMaskWorker, TextClassifyWorker, tokenize_items

    c = config.common
    check_output(c.output)
    if config.task == "classify":
        positions = validate_model(c.model, [PerceiverForSequenceClassification]).max_position_embeddings
        schema, worker, kwargs = schemas.TEXT_CLASSIFY, TextClassifyWorker, {"k": config.top_k}
        # The classifier reads [CLS] + L-2 ids + [SEP]; one more id tells it the document was truncated.
        max_ids = min(config.max_length or positions, positions) - 2 + 1
    else:
        validate_model(c.model, [PerceiverForMaskedLM])
        schema, worker, kwargs = schemas.TEXT_FILL_MASK, FillMaskWorker, {}
        max_ids = None  # fill-mask windows over the whole document
    r = config.read
    range_bytes = config.range_bytes or text_items.RANGE_BYTES
    options = {"inputs": c.inputs, "task": config.task, "model": c.model.describe(), "per_file": r.per_file,
               "labelled_lines": r.labelled, "field": r.field, "column": r.column, "max_length": config.max_length,
               "top_k": config.top_k, "limit": c.limit,
               "range_bytes": range_bytes}
    # limit=None for the runner: --limit counts documents, which the planner applies (items != documents).
    return Job(name=f"text-{config.task}", schema=schema, items=lambda: plan_text_items(config, range_bytes),
               item_schema=text_items.ITEM_SCHEMA, read_fn=tokenize_items,
               read_kwargs={"options": r, "max_ids": max_ids},
               worker_cls=worker, worker_kwargs={**kwargs, "max_length": config.max_length}, model=c.model,
               batch_size=c.batch_size, max_shard_size=MAX_SHARD_ITEMS, items_are_inputs=False, limit=None,
               options=options)


def run(args: argparse.Namespace, argv: list[str] | None = None):
    config = config_from_args(args)
    return execute(build_job(config), config.common, argv)

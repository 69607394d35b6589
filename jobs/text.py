"""``perceiver-jobs text``: byte-level Perceiver over text: classification (top-k) or fill-mask.

    perceiver-jobs text --task fill-mask --input notes/ --output out/fill --model language-perceiver/
    perceiver-jobs text --task classify --input sst.txt --labelled-lines --output out/sst --model sst-model/

Inputs: ``.txt`` (one document per line, or per file with ``--per-file``), ``.jsonl`` (``--field``),
Parquet (``--column``). A row that cannot be read (bad JSON, missing or non-string field, null) becomes an
error row. Invalid UTF-8 is not an error: the model reads bytes. Long documents: classification is
truncated to the model's positions (``truncated`` is set); fill-mask runs window by window, so any length
works. In fill-mask, every ``[MASK]`` in the text is one masked byte: write ``[MASK][MASK][MASK]`` for a
three-byte gap. The whole text corpus is read on the driver (into the manifest).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pyarrow as pa

from jobs.common import (
    CommonConfig,
    UsageError,
    add_common_arguments,
    apply_limit,
    check_output,
    common_config,
    execute,
)

MANIFEST_SCHEMA = pa.schema([("id", pa.string()), ("path", pa.string()), ("relpath", pa.string()),
                             ("position", pa.int64()), ("text", pa.string()), ("raw", pa.binary()),
                             ("label_index", pa.int32()), ("error", pa.string())])


@dataclass(frozen=True)
class TextConfig:
    common: CommonConfig
    task: str
    per_file: bool
    field: str
    column: str
    labelled_lines: bool
    top_k: int
    max_length: int | None
    num_labels: int | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, default_model=None, default_batch_size=8)
    g = parser.add_argument_group("text")
    g.add_argument("--task", choices=("classify", "fill-mask"), required=True)
    g.add_argument("--per-file", action="store_true", help=".txt: one document per file (default: per line)")
    g.add_argument("--field", default="text", help=".jsonl: the text field")
    g.add_argument("--column", default="text", help="Parquet: the text column")
    g.add_argument("--labelled-lines", action="store_true",
                   help='.txt lines are "<label index> <text>" (SST/TREC style): top-1/top-5 accuracy')
    g.add_argument("--top-k", type=int, default=5)
    g.add_argument("--max-length", type=int, help="bytes per model call incl. [CLS]/[SEP] (default: the model's)")
    g.add_argument("--num-labels", type=int, help="--random-init classify: number of classes (default 2)")


def config_from_args(args: argparse.Namespace) -> TextConfig:
    if args.max_length is not None and args.max_length < 3:
        raise UsageError("--max-length must be >= 3")
    if args.num_labels is not None and not args.random_init:
        raise UsageError("--num-labels only applies to --random-init (a checkpoint knows its labels)")
    common = common_config(args)
    if args.task == "classify" and common.model.random_init:
        from dataclasses import replace

        common = replace(common, model=replace(common.model, head="PerceiverForSequenceClassification",
                                               num_labels=args.num_labels or 2))
    return TextConfig(common=common, task=args.task, per_file=args.per_file, field=args.field, column=args.column,
                      labelled_lines=args.labelled_lines, top_k=args.top_k, max_length=args.max_length,
                      num_labels=args.num_labels)


def build_manifest(config: TextConfig) -> pa.Table:
    """Read every input text on the driver: one row per document, unreadable rows keep their error."""
    from pipelines import manifest as manifests
    from pipelines import text_io

    rows = []
    for path, root in manifests.find_files(config.common.inputs, manifests.TEXT_EXTENSIONS):
        if config.labelled_lines and path.suffix.lower() not in (".jsonl", ".parquet"):
            records = text_io.read_labelled_lines(path, root=root)
        else:
            records = text_io.read_texts(path, mode="file" if config.per_file else "line", field=config.field,
                                         column=config.column, root=root)
        rel = manifests.normalize_relpath(path, root)
        for r in records:
            rows.append({"id": r["id"], "path": r["source"], "relpath": rel, "position": r["index"],
                         "text": r["text"], "raw": r["raw"], "label_index": r["label"], "error": r["error"]})
            if config.common.limit is not None and len(rows) >= config.common.limit:
                break
        if config.common.limit is not None and len(rows) >= config.common.limit:
            break
    if not rows:
        raise ValueError(f"no inputs found under {config.common.inputs}: no documents in the text files")
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise UsageError("two documents share an id (the same file given twice?)")
    return apply_limit(table, config.common.limit)


def build_job(config: TextConfig):
    from perceiver_core import PerceiverForMaskedLM, PerceiverForSequenceClassification
    from pipelines import schemas
    from pipelines.model_workers import validate_model
    from pipelines.runner import Job
    from pipelines.stages.text import FillMaskWorker, TextClassifyWorker, tokenize_texts

    c = config.common
    check_output(c.output)
    manifest = build_manifest(config)
    if config.task == "classify":
        validate_model(c.model, [PerceiverForSequenceClassification])
        schema, worker, kwargs = schemas.TEXT_CLASSIFY, TextClassifyWorker, {"k": config.top_k}
    else:
        validate_model(c.model, [PerceiverForMaskedLM])
        schema, worker, kwargs = schemas.TEXT_FILL_MASK, FillMaskWorker, {}
    options = {"task": config.task, "model": c.model.describe(), "per_file": config.per_file,
               "field": config.field, "column": config.column, "max_length": config.max_length}
    return Job(name=f"text-{config.task}", schema=schema, manifest=manifest, read_fn=tokenize_texts,
               read_kwargs={}, worker_cls=worker, worker_kwargs={**kwargs, "max_length": config.max_length},
               model=c.model, batch_size=c.batch_size, rows_per_read_task=max(64, c.batch_size), options=options)


def run(args: argparse.Namespace, argv: list[str] | None = None):
    config = config_from_args(args)
    return execute(build_job(config), config.common, argv)

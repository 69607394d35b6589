"""``perceiver-jobs train``: pretrain or fine-tune any Perceiver IO head on Ray Train.

    perceiver-jobs train --task mlm --data corpus/ --eval-data heldout/ --preset language --tiny --max-steps 500
    perceiver-jobs train --task text-classification --data train.txt --eval-data dev.txt --init-from runs/mlm/final
    perceiver-jobs train --task optical-flow --eval-data flow/middlebury     # synthetic training pairs
    perceiver-jobs train --task multimodal-autoencoding --data clips/ --eval-data heldout_clips/
    perceiver-jobs train --task mlm --data 's3://corpus/train/*.parquet' --output-dir s3://runs --name mlm-1

Local Ray by default (``--address`` for a cluster); ``--num-workers`` DDP workers (0 = in-process).
Every path may be a URI (s3://, gs://, ...): the data streams into the workers through Ray Data, and the
checkpoints, metrics.csv, run.json and final/ go to object storage (``--resume`` continues from there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipelines.storage import OutputWriteError
from pipelines.training.config import (
    PACKINGS,
    PRECISIONS,
    TASK_PRESETS,
    TASKS,
    FlowOptions,
    ImageOptions,
    TextOptions,
    TrainConfig,
    VideoOptions,
    field_default,
)
from pipelines.training.init_schemes import INIT_SCHEMES
from pipelines.training.models import parse_overrides


def _loss_weights(items: list[str]) -> dict[str, float]:
    return {k: float(v) for k, v in parse_overrides(items).items()}


def flag_default(name: str, cls: type = TrainConfig):
    """The default of a config field, for the flag that sets it."""
    return field_default(cls, name)


def _task_and_data_flags(g) -> None:
    """Flags of the "task and data" group."""
    g.add_argument("--task", required=True, choices=TASKS)
    g.add_argument("--data", nargs="+", default=[], metavar="PATH",
                   help="training files/folders/glob patterns, local or URIs such as 's3://bucket/corpus/*.parquet' "
                        "(txt/jsonl/parquet text; image folders with labels.csv; video folders; flow pair folders or "
                        "'synthetic', the default for optical-flow)")
    g.add_argument("--eval-data", nargs="+", default=[], metavar="PATH", help="held-out split, same formats")
    g.add_argument("--text-column", default=flag_default("column", TextOptions))
    g.add_argument("--label-column", default=flag_default("label_column"))
    g.add_argument("--label-names", metavar="FILE", help="class names, one per line in id order (sets id2label)")
    g.add_argument("--cache-data", action="store_true", help="materialize the preprocessed data once")
    g.add_argument("--sample-rows", type=int, default=flag_default("sample_rows"),
                   help="rows of each split read before step 1 for the label set (text-classification without "
                        "--label-names) and the baselines; never a full pass")
    g.add_argument("--s3-endpoint", metavar="URL",
                   help="S3-compatible endpoint (MinIO, Ceph, R2); the same as setting AWS_ENDPOINT_URL")


def _model_flags(g) -> None:
    """Flags of the "model" group."""
    g.add_argument("--preset", help="model preset; the first is the task's default: " + "; ".join(
        f"{task}: {', '.join(names)}" for task, names in TASK_PRESETS.items()))
    g.add_argument("--tiny", action="store_true", help="the preset's tiny variant")
    g.add_argument("--model-config", nargs="+", default=[], metavar="KEY=VALUE",
                   help="PerceiverConfig overrides, JSON values (e.g. d_latents=64 'train_size=[32,48]')")
    g.add_argument("--init-from", metavar="DIR",
                   help="start from this checkpoint: a folder, local or a URI (e.g. an MLM run's final/), "
                        "or a Hugging Face hub id (e.g. deepmind/language-perceiver; its cache, HF_HUB_OFFLINE)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="activation checkpointing")
    g.add_argument("--init-scheme", choices=INIT_SCHEMES,
                   help="fresh models: transformers' std 0.02 or DeepMind's variance scaling (default per task: "
                        "variance-scaling for optical-flow, transformers otherwise)")


def _optimisation_flags(g) -> None:
    """Flags of the "optimisation" group."""
    for name, typ, help_ in (("max_steps", int, "optimizer steps"), ("batch_size", int, "per worker"),
                             ("lr", float, "peak learning rate"), ("weight_decay", float, None),
                             ("warmup_steps", int, None), ("min_lr_ratio", float, "final lr / peak lr (cosine)"),
                             ("grad_clip", float, "max gradient norm, 0 = off"), ("seed", int, None)):
        g.add_argument("--" + name.replace("_", "-"), type=typ, default=flag_default(name), help=help_)
    # (--max-steps 0 with --init-from and held-out data only evaluates that model)
    g.add_argument("--precision", choices=PRECISIONS, default=flag_default("precision"), help="bf16 = autocast")


def _task_option_flags(g) -> None:
    """Flags of the "task options" group."""
    g.add_argument("--seq-len", type=int, help="text: bytes per example (default max_position_embeddings)")
    g.add_argument("--packing", choices=PACKINGS, default=flag_default("packing", TextOptions))
    g.add_argument("--mask-prob", type=float, default=flag_default("mask_prob", TextOptions))
    g.add_argument("--mean-span", type=float, default=flag_default("mean_span", TextOptions))
    g.add_argument("--image-size", type=int, help="image-classification: model input side (saved in the model's "
                                                    "preprocessor_config.json)")
    g.add_argument("--flow-size", type=int, nargs=2, metavar=("H", "W"), help="flow training crop size")
    g.add_argument("--synthetic-pairs", type=int, default=flag_default("synthetic_pairs", FlowOptions))
    g.add_argument("--flow-max-motion", type=float, default=flag_default("max_motion", FlowOptions))
    g.add_argument("--flow-output-points", type=int, help="flow: decode this many sampled pixels per pair")
    g.add_argument("--flow-eval-scale", type=float, default=flag_default("eval_scale", FlowOptions),
                   help="flow: downscale full-size eval pairs by this factor before tiling")
    g.add_argument("--flow-input-gain", type=float, default=flag_default("input_gain", FlowOptions),
                   help="flow, fresh models: multiply the patch projection's initial weights by this")
    g.add_argument("--flow-difference-units", type=int, default=flag_default("difference_units", FlowOptions),
                   help="flow, fresh models: start this many patch-projection units as frame2 - frame1 filters")
    g.add_argument("--flow-difference-gain", type=float, default=flag_default("difference_gain", FlowOptions),
                   help="flow, fresh models: extra initial gain of the frame-difference units")
    g.add_argument("--clip-stride", type=int, help="video: frames between training clip starts")
    g.add_argument("--max-clips-per-video", type=int)
    g.add_argument("--holdout-fraction", type=float, default=flag_default("holdout_fraction", VideoOptions),
                   help="video: hold out the last fraction (in time) of every --data video for evaluation")
    g.add_argument("--output-points", type=int, default=flag_default("output_points", VideoOptions),
                   help="video: sampled output pixels per clip per step")
    g.add_argument("--audio-output-points", type=int, help="video: sampled audio patches per clip (default all)")
    g.add_argument("--no-augment", dest="augment", action="store_false",
                   help="images / video: no random flips, crops or colour changes in training")
    g.add_argument("--loss-weights", nargs="+", default=[], metavar="MODALITY=W",
                   help="autoencoding loss weights (default image=0.03 audio=1.0 label=0.0001)")


def _evaluation_flags(g) -> None:
    """Flags of the "evaluation, logging, checkpoints" group."""
    g.add_argument("--eval-every", type=int, default=flag_default("eval_every"), help="steps; 0 = at the end")
    g.add_argument("--eval-batches", type=int)
    g.add_argument("--log-every", type=int, default=flag_default("log_every"))
    g.add_argument("--checkpoint-every", type=int, default=flag_default("checkpoint_every"))
    g.add_argument("--keep-checkpoints", type=int, default=flag_default("keep_checkpoints"))


def _run_flags(g) -> None:
    """Flags of the "run" group."""
    g.add_argument("--output-dir", default=flag_default("output_dir"),
                   help="runs are <output-dir>/<name> (a local folder or a URI, e.g. s3://bucket/runs)")
    g.add_argument("--name", help="run name (default <task>-<time>)")
    g.add_argument("--resume", action="store_true",
                   help="continue run --name from its latest checkpoint, with the run's flags (only --max-steps "
                        "may be raised, and the logging, checkpoint and cluster flags changed)")
    g.add_argument("--export-dir", help="copy the final model here")
    g.add_argument("--num-workers", type=int, default=flag_default("num_workers"), help="DDP workers; 0 = in-process")
    g.add_argument("--use-gpu", action="store_true")
    g.add_argument("--cpus-per-worker", type=int, default=flag_default("cpus_per_worker"))
    g.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    g.add_argument("--max-failures", type=int, default=flag_default("max_failures"),
                   help="worker-group restarts from the latest checkpoint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for title, add in (("task and data", _task_and_data_flags), ("model", _model_flags),
                       ("optimisation", _optimisation_flags), ("task options", _task_option_flags),
                       ("evaluation, logging, checkpoints", _evaluation_flags), ("run", _run_flags)):
        add(parser.add_argument_group(title))

def config_from_args(args: argparse.Namespace) -> TrainConfig:
    weights = field_default(VideoOptions, "loss_weights")
    weights.update(_loss_weights(args.loss_weights))
    text = TextOptions(column=args.text_column, seq_len=args.seq_len, packing=args.packing, mask_prob=args.mask_prob,
                       mean_span=args.mean_span)
    flow = FlowOptions(size=tuple(args.flow_size) if args.flow_size else None, synthetic_pairs=args.synthetic_pairs,
                       max_motion=args.flow_max_motion, output_points=args.flow_output_points,
                       eval_scale=args.flow_eval_scale, input_gain=args.flow_input_gain,
                       difference_units=args.flow_difference_units, difference_gain=args.flow_difference_gain)
    video = VideoOptions(clip_stride=args.clip_stride, max_clips_per_video=args.max_clips_per_video,
                         holdout_fraction=args.holdout_fraction, output_points=args.output_points,
                         audio_output_points=args.audio_output_points, loss_weights=weights)
    return TrainConfig(
        task=args.task, data=tuple(args.data), eval_data=tuple(args.eval_data), label_column=args.label_column,
        label_names=args.label_names, cache_data=args.cache_data, sample_rows=args.sample_rows, augment=args.augment,
        preset=args.preset, tiny=args.tiny, model_config=parse_overrides(args.model_config),
        init_from=args.init_from, gradient_checkpointing=args.gradient_checkpointing, init_scheme=args.init_scheme,
        max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, min_lr_ratio=args.min_lr_ratio, grad_clip=args.grad_clip,
        precision=args.precision, seed=args.seed,
        eval_every=args.eval_every, eval_batches=args.eval_batches, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        output_dir=args.output_dir, name=args.name, resume=args.resume, export_dir=args.export_dir,
        num_workers=args.num_workers, use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
        address=args.address, max_failures=args.max_failures,
        text=text, image=ImageOptions(size=args.image_size), flow=flow, video=video)


def run(args: argparse.Namespace) -> int:
    from pipelines.training.trainer import fit

    if getattr(args, "s3_endpoint", None):
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint  # read by pipelines.storage, passed to the workers
    try:
        config = config_from_args(args)  # (paths resolved here: an unknown URI scheme stops before any work)
    except ValueError as exc:
        print(f"perceiver-jobs train: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = fit(config)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"perceiver-jobs train: error: {exc}", file=sys.stderr)
        return 2
    except OutputWriteError as exc:
        print(f"perceiver-jobs train: error: {exc}", file=sys.stderr)
        return 1
    summary = {"run_dir": result.run_dir, "final_model": result.final_dir, "checkpoint": result.checkpoint_dir,
               "step": result.step,
               "resumed_from_step": result.start_step, "wall_time_s": round(result.wall_time_s, 1),
               "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}}
    print(json.dumps(summary, indent=2))
    if config.export_dir:
        print(f"exported the final model to {config.export_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perceiver-jobs train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

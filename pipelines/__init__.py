"""Batch inference and training of Perceiver IO models on Ray, over local paths and object storage.

The data flow of a batch job, left to right, and the folder each step lives in::

    readers/   find inputs (listing), decode them (video_decode, image_io, text_io, flow_data), labels
      -> stages/   per job: the CPU read step (decode + preprocess) and the model step (inference + metrics)
      -> batch/    the machinery: work plan (manifest + shards), shard worker, model workers, sink, summary

Beside them:

    storage.py   the one filesystem layer (local, s3://, gs://) every reader, writer and trainer uses
    metrics.py   evaluation metrics shared by the jobs and training (flow EPE, PSNR, top-k, bits per byte)
    training/    Ray Train pretraining and fine-tuning (``perceiver-jobs train``)

``perceiver_core`` (the models) never imports anything from here; ``jobs`` (the CLI) builds on it.
See docs/architecture.md.
"""

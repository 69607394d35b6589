"""Ray Train training for every Perceiver IO head (``perceiver-jobs train``).

It lives beside the batch machinery, not in it: Ray Train runs a training loop per worker, not a Ray Data
pipeline of stages; it shares the readers, ``storage`` and ``metrics`` with the batch jobs.


    config.py         TrainConfig: one run, validated (common part + Text/Image/Flow/VideoOptions)
    resume.py         what --resume may change (checked against run.json before any work)
    tasks/            per task: model config, Ray Datasets, batch preparation, loss and metric sums
    trainer.py        driver: Ray, datasets, TorchTrainer, run directory
    loop.py           train_loop_per_worker as named steps: restore-or-build, train step, report, evaluate,
                      checkpoint, finish
    checkpointing.py  transformers-format checkpoints + optimizer / scheduler / trainer state
    masking.py        byte windows and span masking (mlm)
    synthetic_flow.py textured layers moved by known smooth flow fields (optical flow without a dataset)
    reporting.py      metric sums across steps and workers, metrics.csv, the progress line
    data.py           Ray Datasets of the training inputs (files on any filesystem)
    models.py         building or loading the model of a run
    run_storage.py    the run directory on local disk or object storage
    init_schemes.py   weight initialisation schemes (DeepMind's variance scaling)
    optim.py          AdamW groups, warm-up + cosine
"""

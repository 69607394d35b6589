"""Ray Train training for every Perceiver IO head (``perceiver-jobs train``).

    config.py         TrainConfig: one run, validated
    tasks/            per task: model config, Ray Datasets, batch preparation, loss and metric sums
    trainer.py        driver: Ray, datasets, TorchTrainer, run directory
    loop.py           train_loop_per_worker: steps, reports, evaluation, checkpoints, resume
    checkpointing.py  transformers-format checkpoints + optimizer / scheduler / trainer state
    masking.py        byte windows and span masking (mlm)
    synthetic_flow.py textured layers moved by known smooth flow fields (optical flow without a dataset)
    metrics.py        bits per byte, unigram baseline, PSNR, metrics.csv, progress line
    optim.py          AdamW groups, warm-up + cosine
"""

"""Pipeline stages, one module per job: the read step (decode + preprocess, on CPU workers) and the model
step (a ``batch.model_workers.ModelWorker`` subclass), with the columns they exchange.

    video.py        multimodal autoencoding + classification of clips (PSNR, top-k, pictures)
    images.py       image classification
    text.py         text classification and fill-mask
    flow.py         optical flow on image pairs and video frame pairs (EPE against ground truth, .flo sidecars)
    flow_tiling.py  full frames covered by overlapping model-sized tiles, and the flow model's input layout
    pictures.py     PNG pictures of clips and flow fields

Each output schema is declared in ``pipelines.batch.schemas``.
"""

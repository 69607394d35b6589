"""Readers: finding a job's inputs and decoding them into arrays. Nothing here imports Ray or a model.

    listing.py        inputs on any filesystem, streamed, with stable ids (``stable_id``, ``iter_files``)
    video_decode.py   one video file -> fixed-shape audio-visual clips with PyAV (``iter_clips``, ``probe_video``)
    clips.py          ``ClipSpec`` (how to cut a video), ``Clip`` (one clip) and the per-input limits
    clip_assembly.py  decoded frames + audio -> clips on a fixed time grid
    video_frames.py   frames made upright (display matrix) and resized (swscale)
    image_io.py       one image -> (H, W, 3) uint8 RGB with Pillow (EXIF orientation, alpha, modes)
    text_io.py        lines, whole files, JSONL and Parquet rows -> text rows with ids
    text_items.py     text corpora planned as byte ranges, so workers read their own slice
    flow_data.py      optical-flow pairs (FlyingChairs, Sintel, KITTI, Middlebury layouts), .flo / KITTI PNG
    labels.py         label files (CSV / JSON) for classification inputs
    errors.py         ``InputDecodeError`` and its video / image subclasses (the error rows' ``error_type``)
"""

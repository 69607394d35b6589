"""Image classification (learned / Fourier / conv Perceiver heads) on labelled image folders.

Labels are class names or integer ids (``labels.csv``, or class sub-folders); the names found are numbered in
sorted order (or by ``--label-names``) and saved as the model's ``id2label`` / ``label2id``. A held-out label
the model has no class for is skipped with a ``data.LabelWarning``. Saved models carry a
``preprocessor_config.json`` at the training image size, which the ``images`` batch job reads.
"""

from __future__ import annotations

import numpy as np
import torch

from perceiver_core.image_processor import IMAGENET_MEAN, IMAGENET_STD
from pipelines import storage
from pipelines.training import data
from pipelines.training.tasks.base import StepOutput, Task, model_device
from pipelines.training.tasks.text import classification_stats, summarize_classification

RESIZE_RATIO = 8 / 7  # stored images are this much larger than the crop: random crops in training, centre in eval


def image_size_for(config, model_config) -> int:
    if config.image.size:
        return config.image.size
    return model_config.image_size if config.preset_name == "vision-learned" else 224


def image_processor_for(size: int):
    """The processor that reproduces this task's evaluation preprocessing at ``size``: shorter side to
    ``size * RESIZE_RATIO``, centre crop ``size`` (transformers' ``crop_size`` is that larger side)."""
    from perceiver_core import PerceiverImageProcessor

    stored = round(size * RESIZE_RATIO)
    return PerceiverImageProcessor(size={"height": size, "width": size}, crop_size={"height": stored, "width": stored})


def model_label_lookup(config, model_config) -> dict[str, int]:
    """Label string -> id for this run's model (names; integer ids too with --label-names or unnamed classes)."""
    names = model_config.labels
    return data.label_lookup(names, ids_too=config.label_names is not None or data.has_default_names(names))


def _open_image(path: str):
    """A PIL image of a local path or a URI (object stores: read through ``pipelines.storage``)."""
    import io

    from PIL import Image

    if storage.is_uri(path):
        return Image.open(io.BytesIO(storage.resolve(path).read_bytes()))
    return Image.open(path)


def load_images_batch(batch: dict[str, np.ndarray], size: int, label2id: dict[str, int]) -> dict[str, np.ndarray]:
    """Paths or URIs -> RGB (EXIF-rotated) images, shorter side resized to ``size`` and centre-cropped:
    (n, size, size, 3) uint8, plus label ids. Unreadable images and labels ``label2id`` lacks are dropped (and
    named in the worker's log)."""
    from PIL import Image, ImageOps

    images, labels = [], []
    for path, label in zip(batch["path"], data.encode_labels(batch["label"], label2id, where="image").tolist()):
        if label < 0:  # a label the model has no class for (warned): skipped, never another class
            continue
        try:
            with _open_image(str(path)) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                scale = size / min(im.size)
                w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
                im = im.resize((w, h), Image.Resampling.BICUBIC)
                left, top = (w - size) // 2, (h - size) // 2
                images.append(np.asarray(im.crop((left, top, left + size, top + size))))
                labels.append(label)
        except (OSError, ValueError) as exc:  # corrupt / truncated files: skip the row, keep training
            print(f"skipping unreadable image {path}: {exc}")
    return {"image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
            "label": np.array(labels, dtype=np.int64)}


class ImageClassification(Task):
    name = "image-classification"

    def prepare_model_config(self, config, model_config):
        if not config.max_steps:  # evaluate-only: the --init-from model's labels
            return model_config
        rows = data.image_label_rows(config.data, config.label_column)
        names = data.read_label_names(config.label_names)
        vocab = data.label_vocabulary([r["label"] for r in rows], names)  # (checks the labels against names)
        id2label = dict(enumerate(names)) if names else {i: v for v, i in vocab.items()}
        return model_config.replace(id2label=id2label, problem_type="single_label_classification")

    def build_datasets(self, config, model_config):
        import ray.data

        size = image_size_for(config, model_config)
        stored = round(size * RESIZE_RATIO)
        vocab = model_label_lookup(config, model_config)
        out = {}
        for split, paths in (("train", config.data if config.max_steps else ()), ("val", config.eval_data)):
            if paths:
                rows = data.image_label_rows(paths, config.label_column)
                unknown = [r["label"] for r in rows if r["label"] not in vocab]
                if unknown:  # said once here, before step 1 (the read tasks skip those rows)
                    data.warn_unknown_labels(unknown, vocab, where=f"--{'data' if split == 'train' else 'eval-data'}")
                out[split] = ray.data.from_items(rows).map_batches(
                    load_images_batch, fn_kwargs={"size": stored, "label2id": vocab}, batch_size=32,
                    batch_format="numpy")
        return out

    def metric_names(self, config):
        return ["loss", "accuracy"]

    def prepare_batch(self, batch, rng, config, model_config, train, device):
        images = batch["image"]  # (B, S', S', 3) uint8
        size = image_size_for(config, model_config)
        stored = images.shape[1]
        if train and config.augment:
            top, left = (int(v) for v in rng.integers(0, stored - size + 1, 2))
        else:
            top = left = (stored - size) // 2
        x = images[:, top:top + size, left:left + size].permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S)
        if train and config.augment:
            flip = torch.from_numpy(rng.random(x.shape[0]) < 0.5)
            x[flip] = x[flip].flip(-1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return {"inputs": ((x - mean) / std).to(device), "labels": batch["label"].long().to(device)}

    def forward(self, model, batch, config):
        out = model(inputs=batch["inputs"], labels=batch["labels"])
        return StepOutput(out.loss, classification_stats(out.loss, out.logits, batch["labels"]))

    def summarize(self, stats):
        return summarize_classification(stats)

    def save_extras(self, directory, config, model_config):
        image_processor_for(image_size_for(config, model_config)).save_pretrained(directory)

    def probe(self, model, model_config):
        size = model_config.image_size if type(model).__name__.endswith("Learned") else 32
        g = torch.Generator().manual_seed(0)
        return model(inputs=torch.randn(2, 3, size, size, generator=g).to(model_device(model))).logits

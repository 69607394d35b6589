"""Byte-level text tasks: masked language modelling (pretraining) and sequence classification.

Nothing here makes a pass over the training corpus before step 1: the label set of a classification run and
the baselines (the MLM's byte-unigram bits per byte, the majority-class accuracy) come from the first
``config.sample_rows`` input rows of each split (lines of .txt, records of .jsonl / .parquet, in file order:
``data.head_documents`` / ``data.head_labelled`` stop reading there), or from ``--label-names``, which needs
no reading at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perceiver_core import PerceiverConfig, PerceiverForMaskedLM, PerceiverForSequenceClassification
from perceiver_core.tokenizer import PerceiverTokenizer
from pipelines.metrics import LN2, byte_histogram, unigram_bits_per_byte
from pipelines.training import data
from pipelines.training.config import TrainConfig
from pipelines.training.masking import PAD_ID, crop_documents, pack_documents, span_mask
from pipelines.training.tasks.base import StepOutput, Task, model_device


def seq_len_for(config: TrainConfig, model_config: PerceiverConfig) -> int:
    length = config.text.seq_len or model_config.max_position_embeddings
    if length > model_config.max_position_embeddings:
        raise ValueError(f"seq_len {length} exceeds the model's max_position_embeddings "
                         f"{model_config.max_position_embeddings}")
    return length


# ---------------------------------------------------------------------------------------------- batch functions
def windows_batch(batch: dict[str, np.ndarray], seq_len: int, packing: str) -> dict[str, np.ndarray]:
    """Documents (text column) -> fixed byte windows ``ids`` (n, seq_len) int16 (packed or cropped)."""
    docs = [str(t) for t in batch["text"]]
    windows = pack_documents(docs, seq_len) if packing == "pack" else crop_documents(docs, seq_len)
    return {"ids": windows}


def encode_labelled_batch(batch: dict[str, np.ndarray], seq_len: int, label2id: dict[str, int]
                          ) -> dict[str, np.ndarray]:
    """``text`` + ``label`` -> ``[CLS] bytes [SEP]`` ids (n, seq_len) int16 padded with [PAD], label ids int64.

    Rows whose label ``label2id`` lacks (not in the first --sample-rows training rows, nor in --label-names,
    or an id outside the model's range) are dropped with a ``data.LabelWarning``."""
    labels = data.encode_labels(batch["label"], label2id, where="text")
    keep = labels >= 0
    texts = [str(t) for t, k in zip(batch["text"], keep) if k]
    if not texts:
        return {"ids": np.zeros((0, seq_len), np.int16), "label": labels[keep]}
    tokenizer = PerceiverTokenizer(model_max_length=seq_len)
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return {"ids": np.asarray(enc["input_ids"], dtype=np.int16), "label": labels[keep]}


def sample_counts(paths, config: TrainConfig, seq_len: int, packing: str) -> np.ndarray:
    """Byte counts of the windows made from the first ``config.sample_rows`` documents of ``paths``."""
    docs = data.head_documents(paths, config.text.column, config.sample_rows)
    return byte_histogram(windows_batch({"text": docs}, seq_len, packing)["ids"])


def sample_labels(paths, config: TrainConfig) -> np.ndarray:
    """The labels (strings) of the first ``config.sample_rows`` rows of ``paths``."""
    return data.head_labelled(paths, config.sample_rows, config.text.column, config.label_column)["label"]


def label_map(config: TrainConfig, model_config: PerceiverConfig) -> dict[str, int]:
    """Label string -> id for this run's model: its ``id2label`` names (plus integer ids with --label-names, or
    for a model whose classes have no names)."""
    names = model_config.labels
    return data.label_lookup(names, ids_too=config.label_names is not None or data.has_default_names(names))


# ---------------------------------------------------------------------------------------------- MLM
class MaskedLanguageModelling(Task):
    name = "mlm"

    def head_class(self, config, model_config):
        return PerceiverForMaskedLM

    def build_datasets(self, config, model_config):
        seq_len = seq_len_for(config, model_config)
        out = {}
        if config.data and config.max_steps:
            out["train"] = data.read_text_documents(config.data, config.text.column).map_batches(
                windows_batch, fn_kwargs={"seq_len": seq_len, "packing": config.text.packing}, batch_format="numpy")
        if config.eval_data:
            out["val"] = data.read_text_documents(config.eval_data, config.text.column).map_batches(
                windows_batch, fn_kwargs={"seq_len": seq_len, "packing": "pack"}, batch_format="numpy")
        return out

    def baselines(self, config, model_config, datasets):
        if "val" not in datasets or "train" not in datasets:
            return {}
        seq_len = seq_len_for(config, model_config)
        return {"unigram_bits_per_byte": unigram_bits_per_byte(
            sample_counts(config.data, config, seq_len, config.text.packing),
            sample_counts(config.eval_data, config, seq_len, "pack"))}

    def metric_names(self, config):
        return ["loss", "bits_per_byte", "accuracy", "unigram_bits_per_byte"]

    def prepare_batch(self, batch, rng, config, model_config, train, device):
        ids = batch["ids"].numpy()
        inputs, labels = span_mask(ids, rng, config.text.mask_prob, config.text.mean_span)
        return {"inputs": torch.from_numpy(inputs).to(device), "labels": torch.from_numpy(labels).to(device),
                "attention_mask": torch.from_numpy(ids != PAD_ID).long().to(device)}

    def forward(self, model, batch, config):
        out = model(inputs=batch["inputs"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        labels = batch["labels"]
        masked = labels != -100
        n = int(masked.sum())
        predicted = out.logits[:, :labels.shape[1]].argmax(-1)  # the model decodes max_position_embeddings rows
        correct = int((predicted[masked] == labels[masked]).sum()) if n else 0
        return StepOutput(out.loss, {"nats_sum": float(out.loss.detach()) * n, "bytes": n, "correct": correct})

    def summarize(self, stats):
        n = max(stats.get("bytes", 0.0), 1.0)
        loss = stats.get("nats_sum", 0.0) / n
        return {"loss": loss, "bits_per_byte": loss / LN2, "accuracy": stats.get("correct", 0.0) / n}

    def probe(self, model, model_config):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(6, 262, (2, min(32, model_config.max_position_embeddings)), generator=g)
        ids[:, ::5] = PerceiverTokenizer.mask_token_id
        return model(inputs=ids.to(model_device(model))).logits

    def save_extras(self, directory, config, model_config):
        PerceiverTokenizer(model_max_length=model_config.max_position_embeddings).save_pretrained(directory)


# ---------------------------------------------------------------------------------------------- classification
class TextClassification(Task):
    name = "text-classification"

    def head_class(self, config, model_config):
        return PerceiverForSequenceClassification

    def prepare_model_config(self, config, model_config):
        if not config.max_steps:  # evaluate-only: the --init-from model's labels
            return model_config
        names = data.read_label_names(config.label_names)
        if names is not None:  # every class is named: nothing to read
            id2label = dict(enumerate(names))
        else:
            found = set(sample_labels(config.data, config))
            if not found:
                raise ValueError(f"no labelled rows in --data {list(config.data)}")
            id2label = {i: v for v, i in data.label_vocabulary(found).items()}
        return model_config.replace(id2label=id2label, problem_type="single_label_classification")

    def build_datasets(self, config, model_config):
        kwargs = {"seq_len": seq_len_for(config, model_config), "label2id": label_map(config, model_config)}
        out = {}
        if config.data and config.max_steps:
            out["train"] = data.read_labelled_text(config.data, config.text.column, config.label_column) \
                .map_batches(encode_labelled_batch, fn_kwargs=kwargs, batch_format="numpy")
        if config.eval_data:
            out["val"] = data.read_labelled_text(config.eval_data, config.text.column, config.label_column) \
                .map_batches(encode_labelled_batch, fn_kwargs=kwargs, batch_format="numpy")
        return out

    def baselines(self, config, model_config, datasets):
        if "val" not in datasets:
            return {}
        mapping = label_map(config, model_config)
        ids = data.encode_labels(sample_labels(config.eval_data, config), mapping, where="--eval-data")
        ids = ids[ids >= 0]  # (the unknown ones are skipped in evaluation too)
        if not len(ids):
            return {}
        counts = np.bincount(ids)
        return {"majority_accuracy": float(counts.max() / counts.sum())}

    def metric_names(self, config):
        return ["loss", "accuracy", "majority_accuracy"]

    def prepare_batch(self, batch, rng, config, model_config, train, device):
        ids = batch["ids"].long()
        return {"inputs": ids.to(device), "attention_mask": (ids != PAD_ID).long().to(device),
                "labels": batch["label"].long().to(device)}

    def forward(self, model, batch, config):
        out = model(inputs=batch["inputs"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return StepOutput(out.loss, classification_stats(out.loss, out.logits, batch["labels"]))

    def summarize(self, stats):
        return summarize_classification(stats)

    def probe(self, model, model_config):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(6, 262, (2, min(32, model_config.max_position_embeddings)), generator=g)
        return model(inputs=ids.to(model_device(model))).logits

    def save_extras(self, directory, config, model_config):
        PerceiverTokenizer(model_max_length=model_config.max_position_embeddings).save_pretrained(directory)


def classification_stats(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    n = labels.shape[0]
    correct = int((logits.argmax(-1) == labels).sum())
    return {"loss_sum": float(loss.detach()) * n, "count": n, "correct": correct}


def summarize_classification(stats: dict[str, float]) -> dict[str, float]:
    n = max(stats.get("count", 0.0), 1.0)
    return {"loss": stats.get("loss_sum", 0.0) / n, "accuracy": stats.get("correct", 0.0) / n}

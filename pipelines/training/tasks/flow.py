"""Optical flow: training on synthetic pairs (or real pairs with ground truth), evaluation on real pairs.

Training examples are (frame1, frame2, flow, valid) crops of the model's ``train_size``. Evaluation runs the
production recipe on full-resolution pairs: optionally downscale by ``flow_eval_scale``, cover the frame with
overlapping model-sized tiles (``pipelines.stages.flow_tiling``), upsample the flow back and compare with the ground
truth in original pixels, beside the zero-flow baseline.
"""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from perceiver_core import PerceiverForOpticalFlow
from perceiver_core.losses import endpoint_error
from pipelines import storage
from pipelines.metrics import flow_error_sums
from pipelines.readers import flow_data
from pipelines.stages.flow_tiling import flow_model_inputs, tiled_flow
from pipelines.training.config import TrainConfig
from pipelines.training.synthetic_flow import SyntheticFlowSpec, make_batch
from pipelines.training.tasks.base import StepOutput, Task, model_device


def flow_size_for(config: TrainConfig, model_config) -> tuple[int, int]:
    return tuple(config.flow.size or model_config.train_size)


def source_name(root: str) -> str:
    """A short name of a dataset root for per-dataset metrics, e.g. ``flyingchairs``."""
    name = storage.resolve(root).name
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "flow"


def labelled_pairs(root: str) -> list[dict]:
    """Rows (``flow_data.FlowPair``'s fields + ``source``) of every pair with ground truth under ``root``."""
    source = source_name(root)
    return [dataclasses.asdict(p) | {"source": source}
            for p in flow_data.discover_flow_pairs(root) if p.flow_path is not None]


def load_row(row: dict) -> dict[str, np.ndarray]:
    """A ``labelled_pairs`` row -> frame1, frame2 (H, W, 3) uint8, flow (H, W, 2) float32 px, valid (H, W) bool."""
    pair = flow_data.FlowPair(**{f.name: row[f.name] for f in dataclasses.fields(flow_data.FlowPair)})
    loaded = flow_data.load_pair(pair)
    return {"frame1": loaded.img1, "frame2": loaded.img2, "flow": loaded.flow, "valid": loaded.valid}


def synthetic_batch(batch: dict[str, np.ndarray], spec: dict, seed: int) -> dict[str, np.ndarray]:
    """``id`` rows of ``ray.data.range`` -> synthetic pairs (seeded by (seed, id): the same every epoch)."""
    seeds = [seed * 1_000_003 + int(i) for i in batch["id"]]
    return make_batch(SyntheticFlowSpec(**spec), seeds)


def real_pairs_batch(batch: dict[str, np.ndarray], size: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Pair paths -> one random (seeded per pair) crop of ``size`` per pair; pairs smaller than that are
    resized up (flow scaled with them)."""
    out = {k: [] for k in ("frame1", "frame2", "flow", "valid")}
    for values in zip(*batch.values()):
        row = {k: (None if v is None else str(v)) for k, v in zip(batch, values)}
        f1 = row["frame1_path"]
        pair = load_row(row)
        h, w = pair["flow"].shape[:2]
        th, tw = size
        if h < th or w < tw:
            pair = resize_pair(pair, (max(h, th), max(w, tw)))
            h, w = pair["flow"].shape[:2]
        rng = np.random.default_rng([seed, zlib.crc32(str(f1).encode())])
        y, x = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
        for k, crops in out.items():
            crops.append(pair[k][y:y + th, x:x + tw])
    return {k: np.stack(v) for k, v in out.items()}


def resize_pair(pair: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    h, w = pair["flow"].shape[:2]
    th, tw = size

    def img(a):
        t = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
        return F.interpolate(t, size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()

    flow = img(pair["flow"]) * np.array([tw / w, th / h], dtype=np.float32)
    valid = F.interpolate(torch.from_numpy(np.array(pair["valid"], dtype=np.float32))[None, None], size,
                          mode="nearest")[0, 0] > 0.5
    return {"frame1": np.clip(img(pair["frame1"]), 0, 255).astype(np.uint8),
            "frame2": np.clip(img(pair["frame2"]), 0, 255).astype(np.uint8),
            "flow": flow.astype(np.float32), "valid": valid.numpy()}


class OpticalFlow(Task):
    name = "optical-flow"

    def head_class(self, config, model_config):
        return PerceiverForOpticalFlow

    def _eval_pairs(self, config) -> list[dict]:
        pairs: list[dict] = []
        for root in config.eval_data:
            pairs.extend(labelled_pairs(root))
        if config.eval_data and not pairs:
            raise FileNotFoundError(f"no flow pairs with ground truth under {list(config.eval_data)}")
        return pairs

    def build_datasets(self, config, model_config):
        import ray.data

        size = flow_size_for(config, model_config)
        if not config.max_steps:
            train = None
        elif config.synthetic_flow:
            spec = dataclasses.asdict(SyntheticFlowSpec(height=size[0], width=size[1],
                                                        max_translation=config.flow.max_motion))
            train = ray.data.range(config.flow.synthetic_pairs).map_batches(
                synthetic_batch, fn_kwargs={"spec": spec, "seed": config.seed}, batch_size=16, batch_format="numpy")
        else:
            pairs = [p for root in config.data for p in labelled_pairs(root)]
            if not pairs:
                raise FileNotFoundError(f"no flow pairs with ground truth under {list(config.data)}")
            train = ray.data.from_items(pairs).map_batches(
                real_pairs_batch, fn_kwargs={"size": size, "seed": config.seed}, batch_size=8, batch_format="numpy")
        out = {"train": train} if train is not None else {}
        if config.eval_data:
            out["val"] = ray.data.from_items(self._eval_pairs(config))
        return out

    def metric_names(self, config):
        names = ["loss", "epe", "zero_flow_epe", "acc_1px", "acc_3px"]
        for source in sorted({p["source"] for p in self._eval_pairs(config)}):
            names += [f"epe_{source}", f"zero_flow_epe_{source}"]
        return names

    # Trained from scratch with transformers' init (std 0.02) the model never left zero flow (README, Training).
    # What makes it learn: DeepMind's variance-scaling init; a patch projection whose 64 image channels start
    # ~10x larger, so that they, not the 258 Fourier position channels, dominate the input LayerNorm; and
    # frame-difference units in that projection (see ``difference_filters_``).
    default_init_scheme = "variance-scaling"

    def init_fresh_model(self, model, config):
        super().init_fresh_model(model, config)
        with torch.no_grad():
            weight = model.perceiver.input_preprocessor.patch_projection.weight
            weight.mul_(config.flow.input_gain)
            difference_filters_(weight, config.flow.difference_units, config.flow.difference_gain)
        return model

    def param_lr_multipliers(self, model_config):
        # The decoder divides its output by 100 (DeepMind's convention); training that layer 100x faster is
        # training it in the units of the flow, otherwise Adam needs ~100x more steps to reach pixel scale.
        return {"perceiver.decoder.decoder.output_proj.": 100.0}

    def prepare_batch(self, batch, rng, config, model_config, train, device):
        f1 = batch["frame1"].permute(0, 3, 1, 2).float()  # (B, 3, H, W), 0..255
        f2 = batch["frame2"].permute(0, 3, 1, 2).float()
        if train and config.augment and rng.random() < 0.5:  # horizontal flip of the pair: u changes sign
            f1, f2 = f1.flip(-1), f2.flip(-1)
            flow = batch["flow"].flip(2) * torch.tensor([-1.0, 1.0])
            valid = batch["valid"].flip(2)
        else:
            flow, valid = batch["flow"], batch["valid"]
        out = {"inputs": flow_model_inputs(f1, f2).to(device), "flow": flow.float().to(device),
               "valid": valid.bool().to(device)}
        b, h, w = valid.shape
        if train and config.flow.output_points and config.flow.output_points < h * w:
            points = torch.from_numpy(np.argsort(rng.random((b, h * w)), axis=1)[:, :config.flow.output_points])
            out["points"] = points.to(device)
        return out

    def forward(self, model, batch, config):
        flow, valid = batch["flow"], batch["valid"]
        if "points" in batch:  # decode only sampled pixels: the same per-pixel loss at a fraction of the cost
            out, _ = model.perceiver.run(batch["inputs"], None, batch["points"])
            pred = out.logits  # (B, n, 2)
            b = flow.shape[0]
            idx = batch["points"]
            flow = torch.gather(flow.reshape(b, -1, 2), 1, idx[..., None].expand(-1, -1, 2))
            valid = torch.gather(valid.reshape(b, -1), 1, idx)
            loss = endpoint_error(pred[:, None], flow[:, None], valid[:, None])
        else:
            pred = model(inputs=batch["inputs"]).logits
            loss = endpoint_error(pred, flow, valid)
        n = float(valid.sum())
        zero = float((torch.linalg.vector_norm(flow.float(), dim=-1) * valid).sum())
        return StepOutput(loss, {"epe_sum": float(loss.detach()) * n, "zero_sum": zero, "pixels": n})

    def evaluate(self, model, dataset, config, model_config, device, rng):
        tile = flow_size_for(config, model_config)

        def predict(t1, t2):
            return model(inputs=flow_model_inputs(t1, t2).to(device)).logits.float().cpu()

        stats: dict[str, float] = {}
        with torch.inference_mode():
            for i, row in enumerate(dataset.iter_rows()):
                if config.eval_batches is not None and i >= config.eval_batches:
                    break
                pair = load_row(row)
                pred = predict_full_frame(pair, predict, tile, config.flow.eval_scale)
                sums = flow_error_sums(pred, pair["flow"], pair["valid"])
                zero = flow_error_sums(np.zeros_like(pair["flow"]), pair["flow"], pair["valid"])
                for prefix in (f"{row['source']}/", ""):
                    for k, v in (("pixels", sums.num_pixels), ("epe_sum", sums.epe_sum), ("zero_sum", zero.epe_sum),
                                 ("within_1px", sums.within_1px), ("within_3px", sums.within_3px)):
                        stats[prefix + k] = stats.get(prefix + k, 0.0) + float(v)
        return stats

    def summarize(self, stats):
        out = {}
        prefixes = sorted({k.rsplit("/", 1)[0] + "/" if "/" in k else "" for k in stats})
        for prefix in prefixes:
            n = max(stats.get(prefix + "pixels", 0.0), 1.0)
            suffix = "_" + prefix[:-1] if prefix else ""
            if not prefix:
                out["loss"] = stats.get("epe_sum", 0.0) / n
            out["epe" + suffix] = stats.get(prefix + "epe_sum", 0.0) / n
            out["zero_flow_epe" + suffix] = stats.get(prefix + "zero_sum", 0.0) / n
            if not prefix and "within_1px" in stats:
                out["acc_1px"] = stats["within_1px"] / n
                out["acc_3px"] = stats["within_3px"] / n
        return out

    def probe(self, model, model_config):
        h, w = model_config.train_size
        g = torch.Generator().manual_seed(0)
        return model(inputs=torch.randn(1, 2, 27, h, w, generator=g).to(model_device(model))).logits


@torch.no_grad()
def difference_filters_(weight: torch.Tensor, units: int, gain: float) -> torch.Tensor:
    """Make the first ``units`` rows of the flow patch projection (out, 54) temporal-difference filters.

    Inputs are (frame-1 patch, frame-2 patch), 27 features each; row r becomes (-w_r, w_r) * gain with w_r its
    current frame-2 half, so the unit responds to frame2 - frame1 only (zero on a static pair). Flow is, to first
    order, the temporal difference divided by the spatial gradient, a product the attention's softmax can form
    from these units and the others; with random filters the difference is a small part of every unit and the
    model sat at zero flow several times longer (README, "Does it learn?").
    """
    out_features, in_features = weight.shape
    if units > out_features or in_features % 2:
        raise ValueError(f"cannot make {units} difference units in a ({out_features}, {in_features}) projection")
    half = in_features // 2
    weight[:units, :half] = -weight[:units, half:]
    weight[:units] *= gain
    return weight


def predict_full_frame(pair: dict[str, np.ndarray], predict, tile: tuple[int, int], scale: float) -> np.ndarray:
    """Flow (H, W, 2) for a full-resolution pair: downscale by ``scale``, tile, upsample and rescale the flow."""
    f1 = torch.from_numpy(np.array(pair["frame1"], dtype=np.float32)).permute(2, 0, 1)[None]
    f2 = torch.from_numpy(np.array(pair["frame2"], dtype=np.float32)).permute(2, 0, 1)[None]
    h, w = f1.shape[-2:]
    hs, ws = max(1, round(h / scale)), max(1, round(w / scale))
    if (hs, ws) != (h, w):
        f1 = F.interpolate(f1, (hs, ws), mode="bilinear", antialias=True, align_corners=False)
        f2 = F.interpolate(f2, (hs, ws), mode="bilinear", antialias=True, align_corners=False)
    overlap = min(tile) // 4
    flow = tiled_flow(f1, f2, predict, tile_size=tile, min_overlap=overlap)  # (1, hs, ws, 2)
    if (hs, ws) != (h, w):
        flow = F.interpolate(flow.permute(0, 3, 1, 2), (h, w), mode="bilinear", align_corners=False)
        flow = flow.permute(0, 2, 3, 1) * torch.tensor([w / ws, h / hs])
    return flow[0].numpy()

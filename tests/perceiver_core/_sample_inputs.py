"""Inputs for the tiny presets and output comparisons, without transformers: shared by the parity tests and by the
behaviour tests (gradients, masks, chunking, compile, bf16), which must run where transformers is not installed."""

from __future__ import annotations

import torch


def sample_inputs(name: str, cfg, batch: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    if name == "language":
        ids = torch.randint(6, 262, (batch, 24), generator=g)
        mask = torch.ones(batch, 24, dtype=torch.long)
        mask[0, 17:] = 0  # padding in the first example
        return {"inputs": ids, "attention_mask": mask}
    if name == "vision-learned":
        return {"inputs": torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=g)}
    if name.startswith("vision"):
        return {"inputs": torch.randn(batch, 3, 32, 40, generator=g)}
    if name == "optical-flow":
        h, w = cfg.train_size
        return {"inputs": torch.randn(batch, 2, 27, h, w, generator=g)}
    if name == "multimodal":
        t, s = cfg.num_frames, cfg.image_size
        n_audio = t * cfg.audio_samples_per_frame
        inputs = {"image": torch.randn(batch, t, 3, s, s, generator=g),
                      "audio": torch.randn(batch, n_audio, 1, generator=g),
                      "label": torch.zeros(batch, cfg.num_labels)}
        points = {"image": torch.arange(0, t * s * s, 7), "audio": torch.arange(0, n_audio // cfg.samples_per_patch, 3),
                      "label": None}
        return {"inputs": inputs, "subsampled_output_points": points}
    raise KeyError(name)


def max_abs_diff(a, b) -> float:
    if isinstance(a, dict):
        assert set(a) == set(b), (set(a), set(b))
        return max(max_abs_diff(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b), (len(a), len(b))
        return max((max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()

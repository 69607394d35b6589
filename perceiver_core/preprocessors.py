"""Input preprocessors: task input -> encoder input array (B, M, C) with positions attached.

Every preprocessor has a fixed ``num_channels`` (C) known at construction and returns ``Preprocessed``:
``inputs`` (B, M, C) with positions, ``inputs_without_pos`` (the features before positions were attached;
a dict per modality for the multimodal preprocessor) and ``modality_sizes`` (M per modality, multimodal only).
Constructors take keyword arguments only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import FourierPositionEncoding, TrainablePositionEncoding


@dataclass
class Preprocessed:
    inputs: torch.Tensor  # (B, M, C)
    inputs_without_pos: torch.Tensor | dict[str, torch.Tensor] | None
    modality_sizes: dict[str, int] | None = None
    index_dims: tuple[int, ...] | None = None  # the grid the M positions were flattened from


PositionEncoding = TrainablePositionEncoding | FourierPositionEncoding


class TextPreprocessor(nn.Module):
    """Token ids (B, L) -> token + learned position embeddings (B, L, d_model)."""

    def __init__(self, *, vocab_size: int, d_model: int, max_positions: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_positions, d_model)
        self.num_channels = d_model

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        length = inputs.shape[1]
        if length > self.position_embedding.num_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings "
                             f"{self.position_embedding.num_embeddings}")
        tokens = self.token_embedding(inputs)
        positions = self.position_embedding(torch.arange(length, device=inputs.device))
        return Preprocessed(tokens + positions, tokens)


def space_to_depth(x: torch.Tensor, spatial: int, temporal: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/s, W/s, s*s*C) or (B, T, C, H, W) -> (B, T/t, H/s, W/s, t*s*s*C).

    Feature order: (time-in-block, row-in-block, col-in-block, channel), channel fastest.
    """
    if x.ndim == 4:
        b, c, h, w = x.shape
        x = x.view(b, c, h // spatial, spatial, w // spatial, spatial)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, h // spatial, w // spatial, spatial * spatial * c)
    if x.ndim == 5:
        b, t, c, h, w = x.shape
        x = x.view(b, t // temporal, temporal, c, h // spatial, spatial, w // spatial, spatial)
        x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)
        return x.reshape(b, t // temporal, h // spatial, w // spatial, temporal * spatial * spatial * c)
    raise ValueError(f"space_to_depth expects a 4-D or 5-D input, got shape {tuple(x.shape)}")


class PositionAttacher(nn.Module):
    """Flattens channels-last features (B, *index_dims, C) and attaches positions ("concat" or "add")."""

    def __init__(self, *, in_channels: int, position_encoding: PositionEncoding,
                 projection_channels: int | None = None, mode: str = "concat") -> None:
        super().__init__()
        if mode not in ("concat", "add"):
            raise ValueError(f"mode must be 'concat' or 'add', got {mode!r}")
        self.position_encoding = position_encoding
        enc_channels = position_encoding.num_channels
        self.position_projection = nn.Linear(enc_channels, projection_channels) if projection_channels else None
        pos_channels = projection_channels or enc_channels
        self.mode = mode
        if mode == "add" and pos_channels != in_channels:
            raise ValueError(f"'add' needs position channels ({pos_channels}) == feature channels ({in_channels})")
        self.num_channels = in_channels + pos_channels if mode == "concat" else in_channels

    def forward(self, features: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        b, index_dims, c = features.shape[0], tuple(features.shape[1:-1]), features.shape[-1]
        flat = features.reshape(b, -1, c)  # (B, M, C)
        if isinstance(self.position_encoding, TrainablePositionEncoding):
            grid = index_dims[:2] if interpolate_pos_encoding else None
            pos = self.position_encoding(b, grid)
        else:
            pos = self.position_encoding(index_dims, b, flat.device, flat.dtype)
        if self.position_projection is not None:
            pos = self.position_projection(pos)
        if pos.shape[1] != flat.shape[1]:
            raise ValueError(f"input has {flat.shape[1]} positions ({index_dims}) but the position encoding has "
                             f"{pos.shape[1]}; resize the input or pass interpolate_pos_encoding=True")
        pos = pos.to(flat.dtype)
        joined = torch.cat([flat, pos], dim=-1) if self.mode == "concat" else flat + pos
        return Preprocessed(joined, flat, index_dims=index_dims)


class Conv1x1ImagePreprocessor(nn.Module):
    """(B, C_in, H, W) -> 1x1 conv (stride ``downsample``) -> (B, H'W', out + pos)."""

    def __init__(self, *, in_channels: int, out_channels: int, positions: PositionAttacher,
                 downsample: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=downsample)
        self.positions = positions
        self.num_channels = positions.num_channels

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        return self.positions(self.conv(inputs).permute(0, 2, 3, 1), interpolate_pos_encoding)


class ConvStem(nn.Module):
    """7x7/2 conv (symmetric zero pad 3, no bias) -> BatchNorm -> ReLU -> 3x3/2 max-pool (no pad): 224 -> 55."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class ConvStemImagePreprocessor(nn.Module):
    """(B, 3, H, W) -> conv stem (4x downsampling) -> (B, H'W', out + pos)."""

    def __init__(self, *, in_channels: int, out_channels: int, positions: PositionAttacher) -> None:
        super().__init__()
        self.stem = ConvStem(in_channels=in_channels, out_channels=out_channels)
        self.positions = positions
        self.num_channels = positions.num_channels

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        return self.positions(self.stem(inputs).permute(0, 2, 3, 1), interpolate_pos_encoding)


class PixelImagePreprocessor(nn.Module):
    """(B, C, H, W) or (B, T, C, H, W) pixels, channels moved last, positions attached: (B, [T]HW, C + pos)."""

    def __init__(self, *, positions: PositionAttacher) -> None:
        super().__init__()
        self.positions = positions
        self.num_channels = positions.num_channels

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        if inputs.ndim == 4:
            features = inputs.permute(0, 2, 3, 1)
        elif inputs.ndim == 5:
            features = inputs.permute(0, 1, 3, 4, 2)
        else:
            raise ValueError(f"pixels expect (B, C, H, W) or (B, T, C, H, W), got {tuple(inputs.shape)}")
        return self.positions(features, interpolate_pos_encoding)


class PatchPreprocessor(nn.Module):
    """Space-to-depth patches of images (B, C, H, W) or videos (B, T, C, H, W), optionally a linear projection.

    A video whose time axis collapses to one block (optical flow: 2 frames, temporal block 2) is treated as an
    image grid (B, H/s, W/s, ...).
    """

    def __init__(self, *, positions: PositionAttacher, spatial: int, temporal: int = 1,
                 projection: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.patch_projection = nn.Linear(*projection) if projection else None
        self.positions = positions
        self.num_channels = positions.num_channels

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        patches = space_to_depth(inputs, self.spatial, self.temporal)
        if patches.ndim == 5 and patches.shape[1] == 1:
            patches = patches.squeeze(1)
        if self.patch_projection is not None:
            patches = self.patch_projection(patches)
        return self.positions(patches, interpolate_pos_encoding)


class AudioPreprocessor(nn.Module):
    """Waveform (B, S, 1) or (B, S) -> patches of ``samples_per_patch`` samples (B, S/spp, spp + pos)."""

    def __init__(self, *, samples_per_patch: int, positions: PositionAttacher) -> None:
        super().__init__()
        self.samples_per_patch = samples_per_patch
        self.positions = positions
        self.num_channels = positions.num_channels

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        patches = inputs.reshape(inputs.shape[0], -1, self.samples_per_patch)
        return self.positions(patches)


class OneHotPreprocessor(nn.Module):
    """Label vectors (B, num_labels) -> (B, 1, num_labels); no positions."""

    def __init__(self, *, num_labels: int) -> None:
        super().__init__()
        self.num_channels = num_labels

    def forward(self, inputs: torch.Tensor, interpolate_pos_encoding: bool = False) -> Preprocessed:
        tokens = inputs[:, None, :]
        return Preprocessed(tokens, tokens)


class ModalityPadding(nn.Module):
    """A learned padding vector widening one modality to the common width ``total_channels``, and a mask token
    when ``mask_probability`` is given (multimodal preprocessor; the multimodal decoder pads its queries only)."""

    def __init__(self, *, pad_channels: int, total_channels: int, mask_probability: float | None = None) -> None:
        super().__init__()
        self.padding = nn.Parameter(torch.randn(1, pad_channels) * 0.02)
        self.mask = nn.Parameter(torch.randn(1, total_channels) * 0.02) if mask_probability is not None else None
        self.mask_probability = mask_probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = torch.cat([x, self.padding.to(x.dtype).expand(b, n, -1)], dim=-1)
        p = self.mask_probability
        if self.mask is None or not p:
            return x
        mask_token = self.mask.to(x.dtype)
        if p >= 1.0:
            return mask_token.expand(b, n, -1)
        if not self.training:  # random masking is a training-time augmentation only
            return x
        drop = torch.bernoulli(torch.full((b, n, 1), p, device=x.device, dtype=x.dtype))
        return (1 - drop) * x + drop * mask_token


class MultimodalPreprocessor(nn.Module):
    """Runs one preprocessor per modality, pads each to a common width, concatenates along M.

    Modalities are concatenated in sorted name order (transformers' order). Mask probability 1.0 replaces a
    modality by its mask token (the label in autoencoding); 0 < p < 1 masks positions at random in training.
    """

    def __init__(self, *, modalities: dict[str, nn.Module], mask_probabilities: dict[str, float] | None = None,
                 min_padding_size: int = 2) -> None:
        super().__init__()
        mask_probabilities = mask_probabilities or {}
        self.modalities = nn.ModuleDict({name: modalities[name] for name in sorted(modalities)})
        self.num_channels = max(m.num_channels for m in self.modalities.values()) + min_padding_size
        self.paddings = nn.ModuleDict({
            name: ModalityPadding(pad_channels=self.num_channels - m.num_channels, total_channels=self.num_channels,
                                  mask_probability=mask_probabilities.get(name))
            for name, m in self.modalities.items()})

    def forward(self, inputs: dict[str, torch.Tensor], interpolate_pos_encoding: bool = False) -> Preprocessed:
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise ValueError(f"missing input modalities {sorted(missing)}; expected {sorted(self.modalities)}")
        padded, sizes, without_pos = [], {}, {}
        for name, preprocessor in self.modalities.items():
            out = preprocessor(inputs[name], interpolate_pos_encoding)
            padded.append(self.paddings[name](out.inputs))
            sizes[name] = out.inputs.shape[1]
            without_pos[name] = out.inputs_without_pos
        return Preprocessed(torch.cat(padded, dim=1), without_pos, sizes)

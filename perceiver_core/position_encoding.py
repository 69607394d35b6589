"""Position encodings: a trainable table and Fourier features over an N-d index grid.

Positions live in [-1, 1] per axis. Full grids use ``linspace(-1, 1, n)``; subsampled decoder positions use
``-1 + 2 i / n`` (as DeepMind and transformers do: they never reach +1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def grid_positions(index_dims: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """(prod(index_dims), d) float32 coordinates of a full grid, row-major."""
    axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device) for n in index_dims]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, len(index_dims))


def subsampled_positions(flat_indices: torch.Tensor, index_dims: tuple[int, ...]) -> torch.Tensor:
    """Flat indices (..., n) into ``index_dims`` -> (..., n, d) float32 coordinates ``-1 + 2 i / n_axis``."""
    coords = torch.stack(torch.unravel_index(flat_indices, tuple(index_dims)), dim=-1)
    sizes = torch.tensor(index_dims, device=coords.device)
    return -1 + 2 * coords / sizes


class TrainablePositionEncoding(nn.Module):
    """A learned table of ``num_positions`` x ``num_channels``; returns (B, num_positions, C)."""

    def __init__(self, num_positions: int, num_channels: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(num_positions, num_channels) * 0.02)
        self.num_channels = num_channels

    def forward(self, batch_size: int, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``grid_size`` (H, W): bicubically resize the table, viewed as a square grid, to H x W positions."""
        table = self.table
        side = math.isqrt(table.shape[0])
        if grid_size is not None and tuple(grid_size) != (side, side):
            if side * side != table.shape[0]:
                raise ValueError(f"cannot interpolate a non-square table of {table.shape[0]} positions")
            grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, C, side, side)
            grid = F.interpolate(grid, size=tuple(grid_size), mode="bicubic", align_corners=False)
            table = grid.permute(0, 2, 3, 1).reshape(-1, table.shape[1])
        return table.unsqueeze(0).expand(batch_size, -1, -1)


class FourierPositionEncoding(nn.Module):
    """Fourier features ``[pos, sin(pi f pos), cos(pi f pos)]`` with K bands per axis, f in [1, R/2].

    ``num_channels`` = d K (2, or 1 if sine_only) + (d if concat_pos). No parameters.
    """

    def __init__(self, num_bands: int, max_resolution: tuple[int, ...], concat_pos: bool = True,
                 sine_only: bool = False) -> None:
        super().__init__()
        self.num_bands = num_bands
        self.max_resolution = tuple(int(r) for r in max_resolution)
        self.concat_pos = concat_pos
        self.sine_only = sine_only
        d = len(self.max_resolution)
        self.num_channels = d * num_bands * (1 if sine_only else 2) + (d if concat_pos else 0)
        self._grid_cache: dict[tuple, torch.Tensor] = {}

    def frequencies(self, device: torch.device | None) -> torch.Tensor:
        return torch.stack([torch.linspace(1.0, r / 2, self.num_bands, device=device)
                            for r in self.max_resolution])  # (d, K)

    def encode(self, pos: torch.Tensor) -> torch.Tensor:
        """(..., n, d) float32 coordinates -> (..., n, num_channels) float32 features."""
        pos = pos.float()
        per_axis = pos[..., :, None] * self.frequencies(pos.device)  # (..., n, d, K)
        per_axis = per_axis.flatten(-2)  # (..., n, d*K), axis-major
        features = [torch.sin(math.pi * per_axis)]
        if not self.sine_only:
            features.append(torch.cos(math.pi * per_axis))
        if self.concat_pos:
            features.insert(0, pos)
        return torch.cat(features, dim=-1)

    def grid(self, index_dims: tuple[int, ...], device: torch.device | None) -> torch.Tensor:
        """(prod(index_dims), C) float32 features of the full grid; cached (no gradient flows through them)."""
        key = (tuple(index_dims), str(device), torch.is_inference_mode_enabled())
        cached = self._grid_cache.get(key)
        if cached is None:
            cached = self.encode(grid_positions(tuple(index_dims), device))
            if len(self._grid_cache) > 8:
                self._grid_cache.clear()
            self._grid_cache[key] = cached
        return cached

    def forward(self, index_dims: tuple[int, ...], batch_size: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Features of the full ``index_dims`` grid, (B, prod(index_dims), C) in ``dtype``."""
        return self.grid(tuple(index_dims), device).to(dtype).unsqueeze(0).expand(batch_size, -1, -1)

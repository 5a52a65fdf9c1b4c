"""Spatial tiling with overlap blending, for frames too large to run in one piece.

A window (a slice of frames or latents) is cut into overlapping spatial tiles, each tile goes
through the network on its own, and the outputs are blended back with weights that ramp
linearly across the overlaps (weighted sum divided by the summed weights, so any tile layout
blends exactly). Tiling happens inside each time window, so memory stays bounded in both
frames and pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InputError


@dataclass(frozen=True)
class Tiling:
    """Tile size and overlap in pixels (multiples of 8, the VAE's spatial factor)."""

    size: int = 384
    overlap: int = 96

    def __post_init__(self):
        if self.size % 8 or self.overlap % 8 or self.size < 32 or not 0 <= self.overlap <= self.size // 2:
            raise InputError(f"VAE tiling of {self.size} px with {self.overlap} px overlap is not usable; "
                             f"use a tile size >= 32 and an overlap of at most half of it, both multiples of 8.")


def tile_starts(length, tile, overlap):
    """Start offsets of tiles of ``tile`` covering ``length`` with at least ``overlap`` overlap;
    the last tile is aligned to the end so every tile is full-size."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(n, lead, trail, width, device, dtype):
    """1-D weights: linear ramps of ``width`` steps at the leading / trailing edge when that edge
    overlaps a neighbour."""
    w = torch.ones(n, device=device, dtype=dtype)
    if width > 0:
        ramp = torch.arange(1, width + 1, device=device, dtype=dtype) / (width + 1)
        if lead:
            w[:width] = torch.minimum(w[:width], ramp)
        if trail:
            w[n - width:] = torch.minimum(w[n - width:], ramp.flip(0))
    return w


def run_tiled(fn, x, tiling: Tiling, in_per_px, out_per_px):
    """Apply ``fn`` to overlapping spatial tiles of ``x`` (B, C, T, H, W) and blend the results.

    ``in_per_px`` / ``out_per_px`` convert pixels to the input / output grid (1 for pixels,
    1/8 for latents), e.g. decoding maps latent tiles to pixel tiles.
    """
    h, w = x.shape[-2:]
    tile, overlap = int(tiling.size * in_per_px), int(tiling.overlap * in_per_px)
    if h <= tile and w <= tile:
        return fn(x)
    scale = out_per_px / in_per_px
    out = weight = None
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for i in rows:
        for j in cols:
            y = fn(x[..., i:i + tile, j:j + tile])
            if out is None:
                out = y.new_zeros(y.shape[:-2] + (int(h * scale), int(w * scale)))
                weight = y.new_zeros(int(h * scale), int(w * scale))
            th, tw = y.shape[-2:]
            blend = int(overlap * scale)
            wy = _ramp(th, i > 0, i + tile < h, blend, y.device, y.dtype)
            wx = _ramp(tw, j > 0, j + tile < w, blend, y.device, y.dtype)
            wt = wy[:, None] * wx[None, :]
            oi, oj = int(i * scale), int(j * scale)
            out[..., oi:oi + th, oj:oj + tw] += y * wt
            weight[oi:oi + th, oj:oj + tw] += wt
    return out.div_(weight)

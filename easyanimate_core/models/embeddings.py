"""Fixed (non-learned) sinusoidal embeddings of the DiT.

- :func:`patch_pos_embed`: PixArt's 2D sin-cos embedding of the token grid. Both axes are
  stretched to span ``[0, base_size)`` whatever the resolution or aspect ratio, and the w
  coordinate fills the first half of the channels (PixArt's "w goes first" order).
- :func:`timestep_embedding`: DDPM sinusoidal embedding of diffusion timesteps (cos first).
- :func:`frame_pos_embed`: the motion modules' classic Transformer sin/cos table indexed by
  frame (sin on even channels, cos on odd ones).

All are cached per (shape, device) because they are recomputed on every forward otherwise.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=32)
def _patch_pos_embed(dim: int, h: int, w: int, base_size: int, interpolation_scale: float,
                     device: torch.device) -> torch.Tensor:
    # Positions are float32 (as in PixArt/diffusers); frequencies and products are float64.
    pos_h = torch.arange(h, dtype=torch.float32, device=device) / (h / base_size) / interpolation_scale
    pos_w = torch.arange(w, dtype=torch.float32, device=device) / (w / base_size) / interpolation_scale
    grid_h, grid_w = torch.meshgrid(pos_h, pos_w, indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, grid_w.reshape(-1)), _sincos_1d(dim // 2, grid_h.reshape(-1))], dim=1)
    return emb.float().unsqueeze(0)


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    angles = torch.outer(pos.to(torch.float64), omega)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def patch_pos_embed(dim: int, h: int, w: int, base_size: int, interpolation_scale: float,
                    device) -> torch.Tensor:
    """(1, h*w, dim) float32 embedding of an h x w token grid, row-major."""
    return _patch_pos_embed(dim, h, w, base_size, float(interpolation_scale), torch.device(device))


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) float32 ``[cos, sin]`` embedding, max period 10000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


@lru_cache(maxsize=32)
def _frame_pos_embed(dim: int, frames: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Same arithmetic as the released models' table (float32 throughout), so values match bitwise;
    # cached after the cast, since every motion attention of every step asks for it.
    position = torch.arange(frames, device=device).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(frames, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.to(dtype)


def frame_pos_embed(dim: int, frames: int, device, dtype: torch.dtype) -> torch.Tensor:
    """(frames, dim) temporal positional table (rows 0..frames-1)."""
    return _frame_pos_embed(dim, frames, torch.device(device), dtype)

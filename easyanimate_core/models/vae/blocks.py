"""Down / up / mid blocks of the video VAE and the encoder / decoder stacks built from them.

Block types come from the config as names (the published configs store them as strings, even a
whole tuple as one string); :func:`parse_block_types` reads them as data and
:data:`DOWN_BLOCKS` / :data:`UP_BLOCKS` say what each name means. Only the attention-free
spatial / spatial-temporal blocks exist in released checkpoints, so only those are built.
"""

from __future__ import annotations

import ast

import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from .layers import (
    Attention3D,
    CausalConv3d,
    GroupNorm,
    ResidualBlock3D,
    SpatialDownsampler3D,
    SpatialUpsampler3D,
)

# block name -> does its resampler also act on time
DOWN_BLOCKS = {"SpatialDownBlock3D": False, "SpatialTemporalDownBlock3D": True}
UP_BLOCKS = {"SpatialUpBlock3D": False, "SpatialTemporalUpBlock3D": True}


def parse_block_types(value, known, key, levels):
    """Block names from a config value: a list/tuple of names or the string form of one
    (``'("SpatialDownBlock3D", ...)'``). Parsed as a literal, never evaluated."""
    names = value
    if isinstance(value, str):
        try:
            names = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            names = [value]  # a single bare name
        if isinstance(names, str):
            names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"VAE config '{key}' must be a list of block names, found {value!r}; "
                              f"use names such as {', '.join(known)}.")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CheckpointError(f"VAE config '{key}' names unsupported block type(s) {', '.join(unknown)}; "
                              f"supported: {', '.join(known)}.")
    if len(names) != levels:
        raise CheckpointError(f"VAE config '{key}' lists {len(names)} blocks but 'ch_mult' has {levels} "
                              f"levels; give one block type per level.")
    return list(names)


class DownBlock(nn.Module):
    """``num_layers`` residual blocks, then an optional stride-2 down-sampler."""

    def __init__(self, in_channels, out_channels, num_layers, groups, temporal, downsample):
        super().__init__()
        self.convs = nn.ModuleList(
            ResidualBlock3D(in_channels if i == 0 else out_channels, out_channels, groups)
            for i in range(num_layers))
        self.downsampler = SpatialDownsampler3D(out_channels, temporal) if downsample else None

    def forward(self, x, mode):
        for conv in self.convs:
            x = conv(x, mode)
        return x if self.downsampler is None else self.downsampler(x, mode)

    def out_frames(self, frames, mode):
        return frames if self.downsampler is None else self.downsampler.out_frames(frames, mode)


class UpBlock(nn.Module):
    """``num_layers`` residual blocks, then an optional x2 up-sampler."""

    def __init__(self, in_channels, out_channels, num_layers, groups, temporal, upsample):
        super().__init__()
        self.convs = nn.ModuleList(
            ResidualBlock3D(in_channels if i == 0 else out_channels, out_channels, groups)
            for i in range(num_layers))
        self.upsampler = SpatialUpsampler3D(out_channels, temporal) if upsample else None

    def forward(self, x, mode):
        for conv in self.convs:
            x = conv(x, mode)
        return x if self.upsampler is None else self.upsampler(x, mode)

    def out_frames(self, frames, mode):
        return frames if self.upsampler is None else self.upsampler.out_frames(frames, mode)


class MidBlock3D(nn.Module):
    """ResBlock, then (attention, ResBlock) ``num_layers - 1`` times."""

    def __init__(self, channels, num_layers, groups, use_attention, heads):
        super().__init__()
        self.convs = nn.ModuleList(ResidualBlock3D(channels, channels, groups) for _ in range(num_layers))
        self.attentions = nn.ModuleList(
            Attention3D(channels, groups, heads) for _ in range(num_layers - 1)) if use_attention else None

    def forward(self, x, mode):
        x = self.convs[0](x, mode)
        for i, conv in enumerate(self.convs[1:]):
            if self.attentions is not None:
                x = self.attentions[i](x)
            x = conv(x, mode)
        return x


def _out_head(norm, conv, x, mode):
    return conv(F.silu(norm(x), inplace=True), mode)


class Encoder(nn.Module):
    """conv_in -> down blocks -> mid block -> GN -> SiLU -> conv_out (2 x latent channels)."""

    def __init__(self, cfg):
        super().__init__()
        channels = [cfg["ch"] * m for m in cfg["ch_mult"]]
        groups, layers = cfg["norm_num_groups"], cfg["layers_per_block"]
        self.conv_in = CausalConv3d(cfg["in_channels"], channels[0])
        self.down_blocks = nn.ModuleList()
        previous = channels[0]
        for i, name in enumerate(cfg["down_block_types"]):
            self.down_blocks.append(DownBlock(previous, channels[i], layers, groups, DOWN_BLOCKS[name],
                                              downsample=i < len(channels) - 1))
            previous = channels[i]
        self.mid_block = MidBlock3D(channels[-1], layers, groups, cfg["mid_block_use_attention"],
                                    cfg["mid_block_num_attention_heads"])
        self.conv_norm_out = GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = CausalConv3d(channels[-1], 2 * cfg["latent_channels"])

    def forward(self, x, mode):
        x = self.conv_in(x, mode)
        for block in self.down_blocks:
            x = block(x, mode)
        x = self.mid_block(x, mode)
        return _out_head(self.conv_norm_out, self.conv_out, x, mode)

    def out_frames(self, frames, mode):
        for block in self.down_blocks:
            frames = block.out_frames(frames, mode)
        return frames


class Decoder(nn.Module):
    """conv_in -> mid block -> [crop the context away] -> up blocks -> GN -> SiLU -> conv_out.

    Context latents (neighbouring slices) are seen only by ``conv_in`` and the mid block; ``keep``
    selects the frames of the current slice before the up blocks.
    """

    def __init__(self, cfg):
        super().__init__()
        channels = [cfg["ch"] * m for m in cfg["ch_mult"]]
        groups, layers = cfg["norm_num_groups"], cfg["layers_per_block"]
        self.conv_in = CausalConv3d(cfg["latent_channels"], channels[-1])
        self.mid_block = MidBlock3D(channels[-1], layers, groups, cfg["mid_block_use_attention"],
                                    cfg["mid_block_num_attention_heads"])
        self.up_blocks = nn.ModuleList()
        reversed_channels = channels[::-1]
        previous = reversed_channels[0]
        for i, name in enumerate(cfg["up_block_types"]):
            self.up_blocks.append(UpBlock(previous, reversed_channels[i], layers + 1, groups, UP_BLOCKS[name],
                                          upsample=i < len(channels) - 1))
            previous = reversed_channels[i]
        self.conv_norm_out = GroupNorm(groups, channels[0], eps=1e-6)
        self.conv_out = CausalConv3d(channels[0], cfg["out_channels"])

    def forward(self, z, mode, keep=None):
        x = self.mid_block(self.conv_in(z, mode), mode)
        if keep is not None:
            x = x[:, :, keep[0]:keep[1]]
        for block in self.up_blocks:
            x = block(x, mode)
        return _out_head(self.conv_norm_out, self.conv_out, x, mode)

    def out_frames(self, latents, mode):
        for block in self.up_blocks:
            latents = block.out_frames(latents, mode)
        return latents

"""Leaf layers of the slice / MagViT video VAE.

Every layer takes ``(B, C, T, H, W)`` plus a *time mode* that says how the temporal axis is
treated, instead of the reference's mutable ``padding_flag`` attribute set on every module before
each call. The three modes of the published model:

- ``CAUSAL`` (v2 MagViT): kernels see only the past; the front is padded by replicating frame 0.
- ``FIRST_FRAME`` (slice VAE, a lone odd leading frame): symmetric zero padding, no temporal
  up-sampling.
- ``SLICE`` (slice VAE, 8-frame slices / 2-latent slices): symmetric zero padding ("same"), and
  temporal up-sampling doubles every frame.

Weights may be stored in a lower precision than the compute dtype (fp16 weights with an fp32
upcast, bf16 storage): layers cast their parameters to the input's dtype on the fly, one layer at
a time, so only one layer's weights are ever duplicated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attention

CAUSAL = "causal"
FIRST_FRAME = "first_frame"
SLICE = "slice"
TIME_MODES = (CAUSAL, FIRST_FRAME, SLICE)


def _cast(param, x):
    return None if param is None else param.to(x.dtype)


class Conv3d(nn.Conv3d):
    """Pointwise (1x1x1) projection: residual shortcuts, quant / post-quant convs."""

    def forward(self, x):
        return self._conv_forward(x, _cast(self.weight, x), _cast(self.bias, x))


class GroupNorm(nn.GroupNorm):
    """GroupNorm over ``(C/G, T, H, W)``: statistics pool over every frame passed in together,
    exactly as the reference does (not per frame). Half-precision inputs are normalised in fp32,
    where the variance of a large group is still representable."""

    def forward(self, x):
        if x.dtype in (torch.float16, torch.bfloat16):
            y = F.group_norm(x.float(), self.num_groups, _cast(self.weight, x.float()),
                             _cast(self.bias, x.float()), self.eps)
            return y.to(x.dtype)
        return F.group_norm(x, self.num_groups, _cast(self.weight, x), _cast(self.bias, x), self.eps)


class Linear(nn.Linear):
    def forward(self, x):
        return F.linear(x, _cast(self.weight, x), _cast(self.bias, x))


def conv3d(x, weight, bias, stride, padding):
    """3-D convolution. On CPU in float32 this calls oneDNN directly: PyTorch's dispatch judges
    "small" inputs by B*C*T*H (a 2-D rule) and sends a single 8-frame slice at moderate sizes to
    its im2col fallback, which is ~7x slower and allocates a 27x unfolded copy of the input."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available() \
            and torch.backends.mkldnn.enabled:
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride, padding)


class CausalConv3d(nn.Conv3d):
    """3-D convolution whose temporal padding depends on the time mode.

    CAUSAL pads ``k_t - 1`` replicated frames in front. The other modes pad
    ``ceil((k_t - 1 + 1 - stride_w) / 2)`` zero frames on both sides (the reference computes this
    with the *width* stride; kept for bit-compatibility, it is 1 for every released layer).
    Spatial padding is ``padding`` on both sides (0 for the down-samplers, which pre-pad).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        k_t, k_h, k_w = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        stride = (stride,) * 3 if isinstance(stride, int) else stride
        super().__init__(in_channels, out_channels, (k_t, k_h, k_w), stride=stride,
                         padding=(0, padding, padding))
        self.causal_pad = k_t - 1
        self.same_pad = math.ceil((k_t - 1 + 1 - stride[2]) / 2)

    def forward(self, x, mode, pad_bottom_right=False):
        """``pad_bottom_right`` adds one zero row and column at the bottom/right first (the
        down-samplers' asymmetric spatial padding), folded into the same copy as the temporal pad."""
        weight, bias = _cast(self.weight, x), _cast(self.bias, x)
        spatial = (0, 1, 0, 1) if pad_bottom_right else (0, 0, 0, 0)
        if x.shape[2] == 1 and (mode == CAUSAL or 2 * self.same_pad + 1 == self.kernel_size[0]):
            # A lone frame (a still, the slice VAE's leading frame): its temporal padding is copies
            # of itself (causal) or zeros centred on it, so the kernel collapses to a 2-D one, the
            # taps' sum or the centre tap. Same numbers; CPU conv3d's backward is ~2x slower.
            weight = weight.sum(2) if mode == CAUSAL else weight[:, :, self.same_pad]
            x = F.pad(x[:, :, 0], spatial)
            return F.conv2d(x, weight, bias, self.stride[1:], self.padding[1:]).unsqueeze(2)
        if mode == CAUSAL:
            if pad_bottom_right:
                x = F.pad(x, spatial)
            x = F.pad(x, (0, 0, 0, 0, self.causal_pad, 0), mode="replicate")
            return conv3d(x, weight, bias, self.stride, self.padding)
        if pad_bottom_right:
            return conv3d(F.pad(x, spatial + (self.same_pad, self.same_pad)), weight, bias, self.stride, self.padding)
        # Zero "same" padding is done by the convolution itself: no padded copy of the input.
        return conv3d(x, weight, bias, self.stride, (self.same_pad,) + tuple(self.padding[1:]))

    @staticmethod
    def out_frames(frames, stride_t):
        """Frames after a k3 convolution with temporal stride ``stride_t`` (every mode pads 2)."""
        return (frames - 1) // stride_t + 1


class ResidualBlock3D(nn.Module):
    """GN -> SiLU -> conv3 -> GN -> SiLU -> conv3, plus a 1x1x1 shortcut when channels change."""

    def __init__(self, in_channels, out_channels, groups, eps=1e-6):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.norm2 = GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.shortcut = Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x, mode):
        shortcut = x if self.shortcut is None else self.shortcut(x)
        h = self.conv1(F.silu(self.norm1(x), inplace=True), mode)
        h = self.conv2(F.silu(self.norm2(h), inplace=True), mode)
        return h.add_(shortcut)


class Attention3D(nn.Module):
    """Single-head self-attention over every T*H*W position (the mid block's "3d" attention):
    GroupNorm -> q, k, v -> softmax(q k^T / sqrt(C)) v -> out projection -> + input.

    The projections are plain Linear layers (``to_out`` is not ``to_out.0``), as in the released
    weights. Attention goes through the pack's dispatch, which never materialises the full
    score matrix for long sequences.
    """

    def __init__(self, channels, groups, heads=1, eps=1e-6):
        super().__init__()
        self.heads = heads
        self.group_norm = GroupNorm(groups, channels, eps=eps)
        self.to_q = Linear(channels, channels)
        self.to_k = Linear(channels, channels)
        self.to_v = Linear(channels, channels)
        self.to_out = Linear(channels, channels)

    def forward(self, x):
        b, c, t, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, N, C)

        def split_heads(p):
            return p.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = (split_heads(proj(tokens)) for proj in (self.to_q, self.to_k, self.to_v))
        del tokens
        if q.dtype in (torch.float16, torch.bfloat16):
            # The reference upcasts the softmax; doing the whole product in fp32 covers it.
            out = attention(q.float(), k.float(), v.float()).to(q.dtype)
        else:
            out = attention(q, k, v)
        del q, k, v
        out = self.to_out(out.transpose(1, 2).reshape(b, -1, c))
        return x + out.transpose(1, 2).reshape(b, c, t, h, w)


class SpatialDownsampler3D(nn.Module):
    """Stride-2 k3 convolution over H, W (and over T when ``temporal``)."""

    def __init__(self, channels, temporal):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, stride=(2 if temporal else 1, 2, 2), padding=0)

    def forward(self, x, mode):
        return self.conv(x, mode, pad_bottom_right=True)

    def out_frames(self, frames, mode):
        return CausalConv3d.out_frames(frames, 2 if self.temporal else 1)


class SpatialUpsampler3D(nn.Module):
    """Nearest x2 over H, W -> k3 convolution; with ``temporal`` also x2 linear over time:
    CAUSAL keeps frame 0 and doubles the rest (T -> 2T-1), SLICE doubles all (T -> 2T),
    FIRST_FRAME leaves time alone."""

    def __init__(self, channels, temporal):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x, mode):
        x = self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"), mode)
        if not self.temporal or mode == FIRST_FRAME:
            return x
        if mode == SLICE:
            return F.interpolate(x, scale_factor=(2, 1, 1), mode="trilinear")
        if x.shape[2] == 1:
            return x
        rest = F.interpolate(x[:, :, 1:], scale_factor=(2, 1, 1), mode="trilinear")
        return torch.cat([x[:, :, :1], rest], dim=2)

    def out_frames(self, frames, mode):
        if not self.temporal or mode == FIRST_FRAME:
            return frames
        if mode == SLICE:
            return 2 * frames
        return 1 if frames == 1 else 2 * frames - 1

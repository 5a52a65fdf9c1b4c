"""Building blocks shared by the DiT and its motion modules.

Module and attribute names follow the published checkpoints (diffusers naming: ``to_q``,
``to_out.0``, ``ff.net.0.proj``, ``ff.net.2``), so released files load strictly.

:class:`Linear` is the one place where two cross-cutting features live:

- storage dtype: weights may be stored in a narrower dtype than the activations (fp8); the
  forward then upcasts the weight of this one layer to the activation dtype;
- adapters: a list of callables ``adapter(x) -> delta`` added to the output (runtime LoRA,
  trainable LoRA). Empty by default; removing an adapter restores the layer exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention


class Linear(nn.Linear):
    """``nn.Linear`` with per-layer weight upcast and additive adapters."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.adapters: list = []

    def reset_parameters(self) -> None:
        # Loaders build on ``meta`` and then assign the file's weights: random init there only
        # costs time (about 0.3 s for a PixArt-XL-size DiT) and produces nothing.
        if not self.weight.is_meta:
            super().reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
            bias = None if bias is None else bias.to(x.dtype)
        y = F.linear(x, weight, bias)
        for adapter in self.adapters:
            y = y + adapter(x)
        return y


def layer_norm(x: torch.Tensor, weight=None, bias=None, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm computed in float32 and cast back (the reference's FP32LayerNorm)."""
    if x.dtype == torch.float32:
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    weight = None if weight is None else weight.float()
    bias = None if bias is None else bias.float()
    return F.layer_norm(x.float(), x.shape[-1:], weight, bias, eps).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """Affine LayerNorm evaluated in float32 (motion-module norms)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    """Multi-head attention: self-attention, or cross-attention when ``context`` is given.

    Keys: ``to_q``, ``to_k``, ``to_v``, ``to_out.0``.
    """

    def __init__(self, query_dim: int, heads: int, head_dim: int, bias: bool,
                 context_dim: int | None = None, out_bias: bool = True):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = Linear(query_dim, inner, bias=bias)
        self.to_k = Linear(context_dim or query_dim, inner, bias=bias)
        self.to_v = Linear(context_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([Linear(inner, query_dim, bias=out_bias)])
        self.backend: str | None = None  # attention kernel; None: the process-wide default

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, N, C), ``context`` (B, M, Cc), ``mask`` boolean keep-mask broadcastable to
        (B, heads, N, M). Returns (B, N, C)."""
        context = x if context is None else context
        b, n, _ = x.shape
        m = context.shape[1]
        q = self.to_q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(context).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(context).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        out = attention(q, k, v, mask, backend=self.backend)
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))

    def value_only(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over a single key: softmax is exactly 1, so the output is W_o W_v x."""
        return self.to_out[0](self.to_v(x))


class GELUProj(nn.Module):
    """``ff.net.0``: Linear then GELU (tanh approximation, PixArt) or GEGLU (motion modules)."""

    def __init__(self, dim: int, inner: int, gated: bool, approximate: str):
        super().__init__()
        self.gated, self.approximate = gated, approximate
        self.proj = Linear(dim, inner * 2 if gated else inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.gated:
            x, gate = x.chunk(2, dim=-1)
            return x * F.gelu(gate, approximate=self.approximate)
        return F.gelu(x, approximate=self.approximate)


class FeedForward(nn.Module):
    """``ff.net.0`` (projection + activation), ``ff.net.1`` (dropout slot, no weights), ``ff.net.2``."""

    def __init__(self, dim: int, mult: int = 4, gated: bool = False, approximate: str = "none"):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GELUProj(dim, inner, gated, approximate), nn.Identity(), Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


def set_attention_backend(module: nn.Module, backend: str | None) -> None:
    """Run every attention inside ``module`` with ``backend`` ("sdpa", "xformers", "chunked",
    "math"; None: the process-wide default of ``attention.set_backend``)."""
    from .attention import check_backend

    if backend is not None:
        check_backend(backend)
    for layer in module.modules():
        if isinstance(layer, Attention):
            layer.backend = backend


def attention_backend(module: nn.Module) -> str | None:
    """The backend the attentions of ``module`` run with (that of its first attention)."""
    return next((layer.backend for layer in module.modules() if isinstance(layer, Attention)), None)


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter: a newly added residual branch then starts as an exact identity."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module

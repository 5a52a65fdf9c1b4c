"""The single dispatch point for attention.

Every attention in the pack (DiT spatial / cross / temporal / global, VAE mid block) calls
:func:`attention`. It picks a kernel once per call:

- ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention`` - flash or
  memory-efficient kernels on GPU, the blocked flash kernel on CPU;
- ``"xformers"``: ``xformers.ops.memory_efficient_attention`` when installed and on CUDA;
- ``"chunked"``: SDPA on pieces of at most ``CHUNKED_MAX_ELEMENTS`` scores, for the least memory
  with very long sequences (kernels that materialise scores stay small);
- ``"math"``: the explicit softmax(QK^T)V, only for tests and debugging.

Independently of the kernel, work is split so that no call ever needs more than
``max_elements`` attention scores at once: first along the batch axis (temporal attention runs
one tiny sequence per spatial position, i.e. huge batches), then along queries (global attention
over F*h*w tokens). Both splits are exact: rows of softmax attention do not interact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "xformers", "chunked", "math")
_default_backend = "sdpa"

# Upper bound on B*heads*Nq*Nk scores per kernel call (~512 MiB in fp32 if a kernel ever
# materialises them); the "chunked" backend's bound (~16 MiB).
MAX_ELEMENTS = 1 << 27
CHUNKED_MAX_ELEMENTS = 1 << 22


def check_backend(name: str) -> str:
    """``name`` when it is a usable backend here, else one InputError saying what to choose."""
    from ..errors import InputError

    if name not in BACKENDS:
        raise InputError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}.")
    if name == "xformers" and not xformers_available():
        raise InputError("attention backend 'xformers' was requested but xformers is not installed; "
                         "pip install xformers or use 'sdpa'.")
    return name


def set_backend(name: str) -> None:
    """Choose the kernel for all later calls that do not name one (see the module docstring)."""
    global _default_backend
    _default_backend = check_backend(name)


def get_backend() -> str:
    return _default_backend


def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except Exception:  # noqa: BLE001  (a broken install fails with CUDA/library errors, not just ImportError)
        return False
    return True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None, backend: str | None = None,
              max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """Scaled dot-product attention on ``(B, heads, N, d)`` tensors.

    ``mask`` is a boolean keep-mask (True = attend) broadcastable to ``(B, heads, Nq, Nk)``.
    Returns ``(B, heads, Nq, d)``.
    """
    backend = backend or _default_backend
    if backend == "chunked":
        max_elements = min(max_elements, CHUNKED_MAX_ELEMENTS)
    b, h, nq, _ = q.shape
    nk = k.shape[2]
    per_item = h * nq * nk
    if b > 1 and b * per_item > max_elements:
        step = max(1, max_elements // per_item)
        return torch.cat([
            attention(q[i:i + step], k[i:i + step], v[i:i + step],
                      None if mask is None else _batch_slice(mask, i, step), backend, max_elements)
            for i in range(0, b, step)], dim=0)
    if nq > 1 and b * per_item > max_elements:
        step = max(1, max_elements // max(1, b * h * nk))
        return torch.cat([
            _kernel(q[:, :, i:i + step], k, v,
                    None if mask is None else _query_slice(mask, i, step), backend)
            for i in range(0, nq, step)], dim=2)
    return _kernel(q, k, v, mask, backend)


def _batch_slice(mask: torch.Tensor, start: int, step: int) -> torch.Tensor:
    return mask if mask.shape[0] == 1 else mask[start:start + step]


def _query_slice(mask: torch.Tensor, start: int, step: int) -> torch.Tensor:
    return mask if mask.shape[2] == 1 else mask[:, :, start:start + step]


def _kernel(q, k, v, mask, backend):
    if backend == "xformers" and q.is_cuda:
        import xformers.ops as xops
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
            bias = bias.masked_fill(~mask, float("-inf")).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
        return out.transpose(1, 2)
    if backend == "math":
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

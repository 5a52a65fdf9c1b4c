"""Classifier-free guidance and the learned-sigma split.

The DiT is called once per step on the batch ``[uncond, cond]`` (the reference's order) and the two
halves are combined as ``eps = eps_u + w (eps_c - eps_u)`` (Ho & Salimans 2022). An optional
guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
eq. 15-16) pulls the guided prediction's per-sample standard deviation back toward the conditional
one, which tames over-saturation at high guidance scales; 0 disables it (the reference).

EasyAnimate/PixArt models output ``2 * latent_channels`` channels (eps and the learned variance);
samplers only use eps, so the variance half is dropped before guidance.
"""

from __future__ import annotations

import torch

from ..errors import InputError


def uses_guidance(guidance_scale: float) -> bool:
    """The reference runs the unconditional branch only for scales above 1."""
    return guidance_scale > 1.0


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Blend ``guided`` with its copy rescaled to ``cond``'s per-sample standard deviation."""
    dims = list(range(1, guided.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return rescale * rescaled + (1.0 - rescale) * guided


def guide(uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float,
          rescale: float = 0.0) -> torch.Tensor:
    """Classifier-free guidance of two predictions, optionally rescaled."""
    guided = uncond + guidance_scale * (cond - uncond)
    return rescale_guidance(guided, cond, rescale) if rescale > 0 else guided


def eps_only(out: torch.Tensor, latent_channels: int) -> torch.Tensor:
    """The eps part of a model output that may carry the learned variance (``2 * latent_channels``
    channels, dim 1); outputs with exactly ``latent_channels`` pass through."""
    channels = out.shape[1]
    if channels == 2 * latent_channels:
        return out[:, :latent_channels]
    if channels != latent_channels:
        raise InputError(f"the model returned {channels} channels; expected {latent_channels} "
                         f"(eps) or {2 * latent_channels} (eps + learned sigma) - check the model config")
    return out

"""The encoder's output distribution: a diagonal Gaussian over unscaled latents."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class DiagonalGaussian:
    """``moments`` = cat([mean, logvar], dim=1) of shape (B, 2 * latent_channels, L, h, w).

    ``draw_sizes`` lists the latent-frame counts that :meth:`sample` draws noise for in one call
    each, in order. The reference pipelines sample once per encoded chunk (v2: per 9-frame chunk;
    v3: once for the whole clip); drawing the same way makes a seeded sample match theirs.
    """

    def __init__(self, moments: torch.Tensor, draw_sizes: Sequence[int] | None = None):
        self.moments = moments
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.draw_sizes = list(draw_sizes) if draw_sizes else [self.mean.shape[2]]

    @property
    def std(self):
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self):
        return torch.exp(self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * eps, eps ~ N(0, 1) drawn on the generator's device (CPU generators work
        for GPU latents, as in diffusers)."""
        device = generator.device if generator is not None else self.mean.device
        shape = list(self.mean.shape)
        noise = []
        for n in self.draw_sizes:
            shape[2] = n
            noise.append(torch.randn(shape, generator=generator, device=device, dtype=self.mean.dtype))
        eps = noise[0] if len(noise) == 1 else torch.cat(noise, dim=2)
        return self.mean + self.std * eps.to(self.mean.device)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over channels, frames and pixels."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3, 4))

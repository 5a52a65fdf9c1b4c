"""Training losses.

VAE (EasyAnimate's slice-VAE recipe): reconstruction ``l1|x - x^| + l2 (x - x^)^2 + perceptual LPIPS`` (plus ours, off
by default: ``edge |grad (x - x^)|``, sharp edges when no LPIPS weights are at hand) turned into a
Gaussian NLL with one learned log-variance, plus ``kl_weight * KL`` and an adversarial term whose
weight is balanced against the NLL by the ratio of their gradients at the decoder's last layer
(VQGAN's adaptive weight); discriminators use the hinge loss.

DiT (EasyAnimate's, IDDPM's "hybrid" loss): ``MSE(eps, eps^)`` plus the variational bound term that
trains the learned-range variance (the second half of the model's output channels) through a
detached mean, scaled by ``num_timesteps / 1000``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from easyanimate_core.errors import InputError

# ---------------------------------------------------------------- VAE

class VAELoss(nn.Module):
    """Holds the learned NLL log-variance (a parameter the autoencoder optimizer trains)."""

    def __init__(self, l1_weight=1.0, l2_weight=0.0, perceptual_weight=1.0, edge_weight=0.0):
        super().__init__()
        self.l1_weight, self.l2_weight, self.perceptual_weight = l1_weight, l2_weight, perceptual_weight
        self.edge_weight = edge_weight
        self.logvar = nn.Parameter(torch.zeros(()))

    def nll(self, video, recon, perceptual=None):
        """Summed Gaussian NLL per frame, i.e. divided by B * F (frames folded into the batch).
        ``perceptual``: the (frozen) LPIPS network, or None for no perceptual term."""
        residual = video - recon
        rec = self.l1_weight * residual.abs() + self.l2_weight * residual.pow(2)
        if self.edge_weight > 0:
            rec = rec + self.edge_weight * spatial_gradient_l1(residual)
        frames = video.shape[0] * video.shape[2]
        if perceptual is not None and self.perceptual_weight > 0:
            x = video.transpose(1, 2).flatten(0, 1)
            y = recon.transpose(1, 2).flatten(0, 1)
            lpips = perceptual(x.float(), y.float()).view(video.shape[0], video.shape[2])
            rec = rec + self.perceptual_weight * lpips[:, None, :, None, None]
        nll = rec / torch.exp(self.logvar) + self.logvar
        return nll.sum() / frames, rec.detach().mean()


def spatial_gradient_l1(residual):
    """``|d/dx r| + |d/dy r|`` per pixel (zero past the last row and column): the error on edges,
    which a pixel loss weighs by their few pixels only."""
    dx = F.pad(residual.diff(dim=-1), (0, 1)).abs()
    dy = F.pad(residual.diff(dim=-2), (0, 0, 0, 1)).abs()
    return dx + dy


def generator_adversarial(logits_2d, logits_3d):
    return -(logits_2d.mean() + logits_3d.mean())


def hinge_discriminator(real_2d, fake_2d, real_3d, fake_3d):
    hinge = lambda real, fake: 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
    return hinge(real_2d, fake_2d) + hinge(real_3d, fake_3d)


def adaptive_weight(nll, g_loss, last_layer: torch.Tensor, disc_weight: float):
    """``|grad nll| / |grad g|`` at ``last_layer``, clamped to [0, 1e4], times ``disc_weight``."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach() * disc_weight


# ---------------------------------------------------------------- DiT

TIMESTEP_SAMPLING = ("uniform", "logit_normal")


def check_timestep_sampling(kind: str) -> str:
    if kind not in TIMESTEP_SAMPLING:
        raise InputError(f"diffusion.timesteps {kind!r} is not one of {', '.join(TIMESTEP_SAMPLING)}; "
                         f"pick one of those.")
    return kind


def sample_timesteps(batch: int, num_timesteps: int, kind: str, generator) -> torch.Tensor:
    """``uniform``: randint(0, T). ``logit_normal`` (v3 full training): t = int(sigmoid(u) T),
    u ~ N(0, 1), clipped to [0, T - 1]."""
    if check_timestep_sampling(kind) == "uniform":
        return torch.randint(0, num_timesteps, (batch,), generator=generator)
    u = torch.randn(batch, generator=generator)
    return (torch.sigmoid(u) * num_timesteps).long().clamp(0, num_timesteps - 1)


class DiffusionTerms:
    """The float64 quantities of a discrete DDPM schedule that the loss needs, from its betas."""

    def __init__(self, betas: torch.Tensor):
        b = betas.double()
        acp = torch.cumprod(1.0 - b, 0)
        acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
        self.num_timesteps = len(b)
        self.sqrt_acp = acp.sqrt()
        self.sqrt_one_minus_acp = (1.0 - acp).sqrt()
        posterior_var = b * (1.0 - acp_prev) / (1.0 - acp)
        # variance at t=0 is 0; IDDPM clips its log to the t=1 value
        self.posterior_log_var = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]]))
        self.posterior_coef_x0 = b * acp_prev.sqrt() / (1.0 - acp)
        self.posterior_coef_xt = (1.0 - acp_prev) * (1.0 - b).sqrt() / (1.0 - acp)
        self.log_betas = torch.log(b)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> DiffusionTerms:
        """From the shared schedule's abar_t (``easyanimate_core.sampling.schedule``)."""
        acp = alphas_cumprod.double()
        return cls(1.0 - acp / torch.cat([acp.new_ones(1), acp[:-1]]))

    def to(self, device) -> DiffusionTerms:
        """Keep the tables on the training device, so no step copies them there."""
        for name, value in vars(self).items():
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))
        return self

    @staticmethod
    def _at(table, t, like):
        return table.to(like.device)[t].float().view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0, noise, t):
        return self._at(self.sqrt_acp, t, x0) * x0 + self._at(self.sqrt_one_minus_acp, t, x0) * noise


def _normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _discretized_gaussian_log_likelihood(x, mean, log_scale):
    """Log-likelihood of 8-bit-discretised data in [-1, 1] (IDDPM's decoder term at t = 0)."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


def diffusion_loss(terms: DiffusionTerms, model_output, x0, x_t, noise, t, learned_variance=True):
    """Per-sample loss (B,) and its parts. ``model_output`` has 2C channels when the variance is
    learned (eps then the variance interpolation v in [-1, 1]), else C."""
    channels = x0.shape[1]
    model_output = model_output.float()
    eps = model_output[:, :channels]
    dims = tuple(range(1, x0.ndim))
    mse = (noise.float() - eps).pow(2).mean(dims)
    if not learned_variance:
        return mse, {"mse": mse.mean().detach()}
    v = model_output[:, channels:2 * channels]
    at = lambda table: terms._at(table, t, x0)
    # mean through a detached eps: the VB term trains only the variance
    pred_x0 = (x_t - at(terms.sqrt_one_minus_acp) * eps.detach()) / at(terms.sqrt_acp)
    model_mean = at(terms.posterior_coef_x0) * pred_x0 + at(terms.posterior_coef_xt) * x_t
    frac = (v + 1.0) / 2.0
    model_log_var = frac * at(terms.log_betas) + (1.0 - frac) * at(terms.posterior_log_var)
    true_mean = at(terms.posterior_coef_x0) * x0 + at(terms.posterior_coef_xt) * x_t
    true_log_var = at(terms.posterior_log_var).expand_as(x0)
    kl = _normal_kl(true_mean, true_log_var, model_mean, model_log_var).mean(dims) / math.log(2.0)
    nll = -_discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var).mean(dims) / math.log(2.0)
    vb = torch.where(t.to(x0.device) == 0, nll, kl) * (terms.num_timesteps / 1000.0)
    return mse + vb, {"mse": mse.mean().detach(), "vb": vb.mean().detach()}

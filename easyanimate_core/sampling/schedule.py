"""The published noise schedule and its discretisations for sampling.

EasyAnimate v1-v3 (like PixArt-alpha) train an epsilon-predicting model on 1000 discrete steps with
linear betas 1e-4 -> 0.02 (IDDPM, learned-range sigma whose half of the output the samplers drop).
Inference used diffusers' schedulers built from ``beta_start 0.0001, beta_end 0.02, beta_schedule
linear, steps_offset 1``. Each diffusers scheduler picks its N timesteps differently; a
:class:`SamplingPlan` reproduces exactly the timesteps and noise levels diffusers uses for the
sampler of the same name, so our samplers follow the reference step for step.

Notation (Karras et al. 2022, "EDM"): the discrete forward process is
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``. Dividing by ``sqrt(abar_t)`` gives the
variance-exploding form ``x = x0 + sigma eps`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``;
``sigma`` is the one number that describes a noise level here. The model is always fed the
variance-preserving input ``x / sqrt(sigma^2 + 1)`` with the timestep the reference scheduler
would have passed.

Float32 matters: at the first step sigma is about 157, so the x0 estimate magnifies input
rounding ~160-fold. To follow diffusers to 1e-5 the scalar coefficients are computed with the same
float32 operations in the same order, and each sampler carries its state in the scale its
diffusers scheduler uses (see :class:`SamplingPlan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import InputError

SAMPLERS = ("ddim", "euler", "euler_a", "dpmpp_2m", "unipc")
KARRAS_SAMPLERS = ("euler", "dpmpp_2m", "unipc")  # where diffusers offers use_karras_sigmas


@dataclass(frozen=True)
class NoiseSchedule:
    """The discrete training schedule; field names follow diffusers' scheduler config keys."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    steps_offset: int = 1

    @classmethod
    def from_config(cls, config: dict | None) -> NoiseSchedule:
        """Build from a diffusers ``scheduler_config.json`` / yaml ``noise_scheduler_kwargs`` dict;
        keys that do not change the noise levels (prediction type, spacing, ...) are ignored."""
        config = dict(config or {})
        fields = {k: config[k] for k in cls.__dataclass_fields__ if k in config}
        schedule = cls(**fields)
        if schedule.beta_schedule not in ("linear", "scaled_linear"):
            raise InputError(f"scheduler config beta_schedule {schedule.beta_schedule!r} is not supported; "
                             "expected 'linear' (EasyAnimate, PixArt) or 'scaled_linear'")
        if config.get("prediction_type", "epsilon") != "epsilon":
            raise InputError(f"scheduler config prediction_type {config['prediction_type']!r} is not "
                             "supported; EasyAnimate models predict 'epsilon'")
        return schedule

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t for t = 0..T-1, float32 (computed as diffusers does, so the levels agree bitwise)."""
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float32)
        else:  # scaled_linear: linear in sqrt(beta)
            betas = torch.linspace(self.beta_start ** 0.5, self.beta_end ** 0.5, n, dtype=torch.float32) ** 2
        return torch.cumprod(1.0 - betas, dim=0)

    @cached_property
    def train_sigmas(self) -> np.ndarray:
        """sigma_t = sqrt((1 - abar_t) / abar_t) for t = 0..T-1 (float32, increasing)."""
        abar = self.alphas_cumprod
        return (((1 - abar) / abar) ** 0.5).numpy()

    def sigma_at(self, timesteps: np.ndarray) -> np.ndarray:
        """Noise level at (possibly fractional) timesteps, linear in t between training steps."""
        return np.interp(timesteps, np.arange(self.num_train_timesteps), self.train_sigmas)

    def timestep_at(self, sigmas: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`sigma_at`, interpolating linearly in log sigma (as diffusers does
        for Karras sigmas)."""
        log_sigmas = np.log(self.train_sigmas)  # float32 like diffusers, so rounding agrees
        log_sigma = np.log(np.maximum(np.asarray(sigmas, dtype=np.float64), 1e-10))
        low = np.clip(np.searchsorted(log_sigmas, log_sigma, side="right") - 1, 0, len(log_sigmas) - 2)
        w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
        return (1 - w) * low + w * (low + 1)

    @staticmethod
    def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
        """Karras et al. (2022) eq. 5: N levels from sigma_max to sigma_min evenly spaced in sigma^(1/rho)."""
        ramp = np.linspace(0, 1, steps)
        return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


VE_SAMPLERS = ("euler", "euler_a")  # diffusers runs these on x0 + sigma * eps, the rest on sqrt(abar) x0 + ...


def alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) of the variance-preserving form for noise level ``sigma`` (float32 ops in
    diffusers' order, so the coefficients agree bitwise)."""
    alpha_t = 1 / ((sigma ** 2 + 1) ** 0.5)
    return alpha_t, sigma * alpha_t


@dataclass(frozen=True)
class SamplingPlan:
    """The N steps a sampler takes: ``timesteps[i]`` is what the model is told at step i,
    ``sigmas[i]`` the noise level of the state it sees; ``sigmas[N] = 0`` is the clean end.
    ``start`` > 0 skips the noisiest steps (video-to-video, ``denoise < 1``).

    The state a sampler carries is in its diffusers scheduler's own scale: ``x0 + sigma * eps``
    for the Euler family, ``alpha_t x0 + sigma_t eps`` (alpha_t = 1 / sqrt(sigma^2 + 1),
    sigma_t = sigma * alpha_t) for DDIM, DPM++ and UniPC. Both end at x0."""

    sampler: str
    timesteps: torch.Tensor  # (N,) int64, or float32 for the Euler family (diffusers' convention)
    sigmas: torch.Tensor     # (N + 1,) float32 on the CPU
    start: int = 0

    @property
    def steps(self) -> int:
        """Steps actually run (after ``start``)."""
        return len(self.sigmas) - 1 - self.start

    @property
    def variance_exploding(self) -> bool:
        return self.sampler in VE_SAMPLERS

    def initial_state(self, noise: torch.Tensor) -> torch.Tensor:
        """Starting state of a full (denoise = 1) run from unit noise: diffusers' ``init_noise_sigma``,
        which is sigma_max for the Euler family ('linspace' spacing) and 1 for the others."""
        return noise * self.sigmas[0] if self.variance_exploding else noise

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """``x0`` noised to the level of step ``index`` (absolute index into ``sigmas``) in the
        sampler's scale: diffusers' ``add_noise`` at ``timesteps[index]``."""
        sigma = self.sigmas[index]
        if self.variance_exploding:
            return x0 + noise * sigma
        alpha_t, sigma_t = alpha_sigma(sigma)
        return alpha_t * x0 + sigma_t * noise


def make_plan(sampler: str, steps: int, karras: bool = False, denoise: float = 1.0,
              schedule: NoiseSchedule | None = None) -> SamplingPlan:
    """Timesteps and noise levels of diffusers' scheduler for ``sampler`` at ``steps`` steps.

    Spacing per diffusers' defaults: DDIM 'leading' (+ steps_offset), Euler / Euler-A 'linspace'
    over [0, T-1] (fractional timesteps), DPM++ / UniPC 'linspace' over N+1 points without the
    last; every schedule ends at sigma = 0 (``final_sigmas_type='zero'``, DDIM's
    ``set_alpha_to_one``). ``denoise`` < 1 keeps the last ``int(steps * denoise)`` steps, as the
    reference's img2img ``get_timesteps`` does."""
    schedule = schedule or NoiseSchedule()
    if sampler not in SAMPLERS:
        raise InputError(f"sampler {sampler!r} is unknown; choose one of {', '.join(SAMPLERS)}")
    if karras and sampler not in KARRAS_SAMPLERS:
        raise InputError(f"karras sigmas are not available for sampler {sampler!r}; use them with "
                         f"{', '.join(KARRAS_SAMPLERS)} or turn karras off")
    n_train = schedule.num_train_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= n_train:
        raise InputError(f"steps must be an integer from 1 to {n_train}, got {steps!r}")
    if not 0.0 < denoise <= 1.0:
        raise InputError(f"denoise must be in (0, 1], got {denoise}; use 1.0 for text-to-video")
    kept = min(int(steps * denoise), steps)
    if kept == 0:
        raise InputError(f"denoise {denoise} with {steps} steps keeps no step; raise denoise to at "
                         f"least {1 / steps:.3g} or use more steps")

    if sampler == "ddim":
        timesteps = np.arange(steps)[::-1] * (n_train // steps) + schedule.steps_offset
        if timesteps[0] >= n_train:  # steps_offset pushes the first step past the schedule
            raise InputError(f"ddim with {steps} steps would start at timestep {timesteps[0]} beyond the "
                             f"{n_train} trained ones; use at most {steps - 1} steps")
        sigmas = schedule.train_sigmas[timesteps]
    elif sampler in ("euler", "euler_a"):
        timesteps = np.linspace(0, n_train - 1, steps, dtype=np.float32)[::-1].copy()
        sigmas = schedule.sigma_at(timesteps)
        if karras:  # diffusers takes the range from the spaced levels (a single step: sigma(0) only)
            sigmas = schedule.karras_sigmas(float(sigmas[-1]), float(sigmas[0]), steps)
            timesteps = schedule.timestep_at(sigmas)
        timesteps = timesteps.astype(np.float32)
    else:  # dpmpp_2m, unipc
        timesteps = np.linspace(0, n_train - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
        sigmas = schedule.sigma_at(timesteps)
        if karras:
            train = schedule.train_sigmas
            sigmas = schedule.karras_sigmas(float(train[0]), float(train[-1]), steps)
            timesteps = schedule.timestep_at(sigmas).round().astype(np.int64)
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    return SamplingPlan(sampler=sampler, timesteps=torch.from_numpy(np.ascontiguousarray(timesteps)),
                        sigmas=torch.from_numpy(sigmas), start=steps - kept)

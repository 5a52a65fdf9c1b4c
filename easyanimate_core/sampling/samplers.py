"""Samplers for the epsilon-predicting video DiT, in the style of k-diffusion's ``sampling.py``.

Every sampler is one short loop over the noise levels ``sigmas`` (float32, ``sigmas[-1] = 0``) of a
:class:`~.schedule.SamplingPlan`. Each reproduces diffusers' scheduler of the same name (as
EasyAnimate configures it) step for step, in that scheduler's own state scale (schedule.py):

    ddim      DDIMScheduler                    Song et al. 2021, eta = 0
    euler     EulerDiscreteScheduler           Karras et al. 2022, Algorithm 1 without churn
    euler_a   EulerAncestralDiscreteScheduler  Euler + ancestral noise (k-diffusion)
    dpmpp_2m  DPMSolverMultistepScheduler      Lu et al. 2022, DPM-Solver++(2M), Algorithm 2
    unipc     UniPCMultistepScheduler          Zhao et al. 2023, UniPC-2 with B(h) = e^h - 1

Inside a sampler ``model(x, i)`` returns the predicted noise eps for state ``x`` at step ``i`` and
``denoised`` is the matching x0 estimate. ``step_done(i, x, denoised)`` returns the state to
continue from (the driver reports progress there and lets callers blend latents).

Scalars are 0-dim float32 CPU tensors combined in diffusers' order (the x0 estimate at sigma ~157
magnifies any rounding difference ~160-fold); CPU scalars never synchronise with the device, and
a step costs only its few elementwise tensor ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError
from .schedule import NoiseSchedule, SamplingPlan, alpha_sigma, make_plan

ModelFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def vp_levels(sigmas: torch.Tensor) -> tuple[list, list, list]:
    """Per-level (alpha_t, sigma_t, lambda_t) as 0-dim float32 tensors, computed once per run with
    scalar ops (vectorised log/exp kernels may round differently from diffusers' scalar ones)."""
    levels = [alpha_sigma(sigma) for sigma in sigmas]
    alphas = [a for a, _ in levels]
    sigmas_vp = [s for _, s in levels]
    lambdas = [torch.log(a) - torch.log(s) for a, s in levels]
    return alphas, sigmas_vp, lambdas


def draw_noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Unit Gaussian noise shaped like ``like``, drawn on the generator's device as diffusers'
    ``randn_tensor`` does (a CPU generator gives the same numbers whatever device samples)."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def sample_ddim(model, x, sigmas, step_done, generator=None):
    """DDIM, eta = 0: ``x_next = alpha_next x0 + sigma_next eps``. x0 is clipped to [-1, 1] first
    because diffusers' DDIMScheduler does so by default (``clip_sample=True``) and the reference
    builds it with default arguments; eps is not recomputed from the clipped x0."""
    alpha, sigma, _ = vp_levels(sigmas)
    for i in range(len(sigmas) - 1):
        eps = model(x, i)
        denoised = ((x - sigma[i] * eps) / alpha[i]).clamp(-1.0, 1.0)
        x = alpha[i + 1] * denoised + sigma[i + 1] * eps
        x = step_done(i, x, denoised)
    return x


def sample_euler(model, x, sigmas, step_done, generator=None):
    """Euler's method on the probability-flow ODE dx/dsigma = (x - x0) / sigma."""
    for i in range(len(sigmas) - 1):
        eps = model(x, i)
        denoised = x - sigmas[i] * eps
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
        x = step_done(i, x, denoised)
    return x


def ancestral_step(sigma_from, sigma_to):
    """Split the move sigma_from -> sigma_to into a deterministic step down to ``sigma_down`` and
    fresh noise of scale ``sigma_up`` (sigma_down^2 + sigma_up^2 = sigma_to^2)."""
    sigma_up = (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def sample_euler_a(model, x, sigmas, step_done, generator=None):
    """Euler ancestral. Noise order: one ``randn`` of x's shape per step, drawn after that step's
    model call (also on the last step, where its scale is 0), exactly like diffusers."""
    for i in range(len(sigmas) - 1):
        eps = model(x, i)
        denoised = x - sigmas[i] * eps
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1])
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigma_down - sigmas[i])
        x = x + draw_noise(x, generator) * sigma_up
        x = step_done(i, x, denoised)
    return x


def sample_dpmpp_2m(model, x, sigmas, step_done, generator=None):
    """DPM-Solver++(2M), midpoint variant: second order from the previous x0 estimate, first
    order on the first step and on the final step to sigma = 0 (``final_sigmas_type='zero'``)."""
    alpha, sigma, lam = vp_levels(sigmas)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        eps = model(x, i)
        denoised = (x - sigma[i] * eps) / alpha[i]
        h = lam[i + 1] - lam[i]
        phi = alpha[i + 1] * (torch.exp(-h) - 1.0)
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma[i + 1] / sigma[i]) * x - phi * denoised
        else:
            r = (lam[i] - lam[i - 1]) / h
            D1 = (1.0 / r) * (denoised - old_denoised)
            x = (sigma[i + 1] / sigma[i]) * x - phi * denoised - 0.5 * phi * D1
        old_denoised = denoised
        x = step_done(i, x, denoised)
    return x


def unipc_update(x, levels, s0, t, m0, m1=None, m_t=None):
    """One UniPC update of ``x`` from level index ``s0`` (x0 estimate ``m0``) to level ``t``.

    Predictor (UniP) when ``m_t`` is None, corrector (UniC) when ``m_t`` is the x0 estimate taken
    at level t. ``m1``, the x0 estimate one level before s0, makes it second order. Notation of
    the paper; data prediction with B(h) = expm1(-h) ("bh2")."""
    alpha, sigma, lam = levels
    h = lam[t] - lam[s0]
    hh = -h
    h_phi_1 = torch.expm1(hh)
    B_h = h_phi_1  # "bh2": B(h) = expm1(-h), the same number as h phi_1
    x_t = sigma[t] / sigma[s0] * x - alpha[t] * h_phi_1 * m0
    if m1 is not None:
        r = (lam[s0 - 1] - lam[s0]) / h
        D1 = (m1 - m0) / r
    if m_t is None:
        return x_t if m1 is None else x_t - alpha[t] * B_h * (0.5 * D1)
    D1_t = m_t - m0
    if m1 is None:
        return x_t - alpha[t] * B_h * (0.5 * D1_t)
    # rho solves R rho = b with R = [[1, 1], [r, 1]] and b_k = k! h phi_{k+1}(h) / B(h)
    h_phi_2 = h_phi_1 / hh - 1
    h_phi_3 = h_phi_2 / hh - 0.5
    R = torch.tensor([[1.0, 1.0], [r.item(), 1.0]])  # CPU scalars: .item() does not synchronise
    b = torch.stack([h_phi_2 / B_h, h_phi_3 * 2 / B_h])
    rho = torch.linalg.solve(R, b)
    return x_t - alpha[t] * B_h * (rho[0] * D1 + rho[1] * D1_t)


def sample_unipc(model, x, sigmas, step_done, generator=None):
    """UniPC-2: each step first corrects the current state with the model output just taken
    there (UniC, at the order of the previous step), then predicts the next one (UniP). The order
    warms up from 1 and drops to 1 on the final step (diffusers' ``lower_order_final``)."""
    levels = vp_levels(sigmas)
    alpha, sigma, _ = levels
    n = len(sigmas) - 1
    history = []                    # x0 estimates of the previous steps, newest last
    x_last, order_last = None, 0    # state before the previous prediction, and that order
    for i in range(n):
        eps = model(x, i)
        denoised = (x - sigma[i] * eps) / alpha[i]
        if x_last is not None:
            x = unipc_update(x_last, levels, i - 1, i, history[-1],
                             m1=history[-2] if order_last == 2 else None, m_t=denoised)
        history = (history + [denoised])[-2:]
        order = min(2, n - i, i + 1)
        x_last, order_last = x, order
        x = unipc_update(x, levels, i, i + 1, denoised, m1=history[-2] if order == 2 else None)
        x = step_done(i, x, denoised)
    return x


SAMPLER_FUNCTIONS = {
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_a": sample_euler_a,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
}


def run_plan(model_fn: ModelFn, x: torch.Tensor, plan: SamplingPlan,
             generator: torch.Generator | None = None, progress=None, callback=None) -> torch.Tensor:
    """Run ``plan`` from state ``x`` (at level ``plan.sigmas[plan.start]``, in the sampler's scale);
    returns the clean latents.

    ``model_fn(x_in, t, i)`` gets the model's (variance-preserving) input, the (B,) timesteps and
    the step index ``i`` (0-based, of the steps run; what step-dependent conditioning keys on)
    and returns eps; it is called exactly once per step, in order.
    ``callback(i, x, denoised)`` runs after step ``i`` (0-based, of the steps run): ``x`` is the new
    state at level ``plan.start + i + 1`` and ``denoised`` the x0 estimate of the step; returning a
    tensor replaces the state (latent blending, e.g. with ``plan.noised(x0, noise, plan.start + i + 1)``).
    ``progress(i + 1, steps, preview=denoised)`` follows and may raise to cancel."""
    sigmas = plan.sigmas[plan.start:]
    timesteps = plan.timesteps[plan.start:].to(x.device)
    batch, total = x.shape[0], plan.steps

    def model(x, i):
        if plan.variance_exploding:  # the model was trained on the variance-preserving input
            x = x / ((sigmas[i] ** 2 + 1) ** 0.5)
        return model_fn(x, timesteps[i].expand(batch), i).to(torch.float32)

    def step_done(i, x, denoised):
        if callback is not None:
            replaced = callback(i, x, denoised)
            if replaced is not None:
                x = replaced
        if progress is not None:
            progress(i + 1, total, preview=denoised)
        return x

    return SAMPLER_FUNCTIONS[plan.sampler](model, x, sigmas, step_done, generator)


def sample(model_fn: ModelFn, noise: torch.Tensor, sampler: str = "dpmpp_2m", steps: int = 25,
           generator: torch.Generator | None = None, karras: bool = False, denoise: float = 1.0,
           init_latents: torch.Tensor | None = None, schedule: NoiseSchedule | None = None,
           progress=None, callback=None) -> torch.Tensor:
    """Sample latents from unit Gaussian ``noise`` with the model ``model_fn(x, t, step) -> eps``.

    ``denoise`` < 1 (video-to-video) starts from ``init_latents`` noised with ``noise`` to the first
    retained step, as the reference's img2img path does. ``generator`` feeds the per-step noise of
    ``euler_a`` (the other samplers are deterministic given ``noise``); without one the global
    torch RNG is used. ``progress`` / ``callback``: see :func:`run_plan`. The state is kept in
    float32 whatever the model's dtype. Returns float32 latents shaped like ``noise``."""
    plan = make_plan(sampler, steps, karras=karras, denoise=denoise, schedule=schedule)
    noise = noise.float()
    if plan.start == 0:
        x = plan.initial_state(noise)
    else:
        if init_latents is None:
            raise InputError(f"denoise {denoise} < 1 needs init_latents (the encoded input video); "
                             "pass them or set denoise to 1.0")
        if init_latents.shape != noise.shape:
            raise InputError(f"init_latents have shape {tuple(init_latents.shape)} but the noise has "
                             f"{tuple(noise.shape)}; encode the input video at the output size and length")
        x = plan.noised(init_latents.to(noise.device, torch.float32), noise, plan.start)
    return run_plan(model_fn, x, plan, generator=generator, progress=progress, callback=callback)

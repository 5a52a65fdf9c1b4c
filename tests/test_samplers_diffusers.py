"""Our samplers against diffusers' schedulers (test-only reference), step by step.

Both sides get the same seeded noise and a deterministic nonlinear toy eps-model; the state after
every step must agree to 1e-5 (each sampler in its diffusers scheduler's own scale)."""

import diffusers  # the test extra installs it: a missing diffusers must fail here, not skip
import pytest
import torch

from easyanimate_core.sampling.samplers import sample
from easyanimate_core.sampling.schedule import make_plan

EASYANIMATE_KWARGS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", steps_offset=1)
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}
CASES = [(name, karras) for name in SCHEDULERS for karras in (False, True)
         if not karras or name in ("euler", "dpmpp_2m", "unipc")]


def toy_eps(x, t):
    """A fixed nonlinear function of the input and the (int or float) timestep."""
    t = t.float().view(-1, *[1] * (x.ndim - 1)) / 1000
    return torch.tanh(0.7 * x + t) * (1 - 0.5 * t) + 0.2 * torch.sin(3 * x * t + 1)


def diffusers_run(name, steps, karras, denoise, noise, init, seed):
    kwargs = dict(EASYANIMATE_KWARGS, **({"use_karras_sigmas": True} if karras else {}))
    scheduler = getattr(diffusers, SCHEDULERS[name])(**kwargs)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if denoise < 1:  # the reference's img2img get_timesteps + add_noise
        timesteps = timesteps[steps - int(steps * denoise):]
        latents = scheduler.add_noise(init, noise, timesteps[:1])
    else:
        latents = noise * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(seed)
    states = []
    for t in timesteps:
        eps = toy_eps(scheduler.scale_model_input(latents, t), t.expand(latents.shape[0]))
        extra = {"generator": generator} if name == "euler_a" else {}
        latents = scheduler.step(eps, t, latents, **extra).prev_sample
        states.append(latents)
    return states


@pytest.mark.parametrize("name,karras", CASES)
@pytest.mark.parametrize("steps,denoise", [(1, 1.0), (5, 1.0), (25, 1.0), (5, 0.6), (25, 0.5)])
def test_matches_diffusers_every_step(name, karras, steps, denoise):
    noise = torch.randn(2, 4, 3, 8, 8)
    init = torch.randn(2, 4, 3, 8, 8).clamp(-2, 2)
    expected = diffusers_run(name, steps, karras, denoise, noise, init, seed=7)

    ours, seen_t = [], []

    steps_seen = []

    def model_fn(x, t, step):
        seen_t.append(t)
        steps_seen.append(step)
        return toy_eps(x, t)

    final = sample(model_fn, noise, name, steps, generator=torch.Generator().manual_seed(7), karras=karras,
                   denoise=denoise, init_latents=init, callback=lambda i, x, denoised: ours.append(x))
    assert len(ours) == len(expected) == int(steps * denoise)
    assert steps_seen == list(range(len(ours)))  # the samplers hand the step index through
    for i, (a, b) in enumerate(zip(ours, expected)):
        assert (a - b).abs().max().item() <= 1e-5, f"step {i}"
    assert torch.equal(final, ours[-1])
    # the model sees diffusers' timesteps (ints, or floats for the Euler family), batch-expanded
    plan = make_plan(name, steps, karras, denoise)
    assert torch.equal(torch.stack([t[0] for t in seen_t]), plan.timesteps[plan.start:])
    assert all(t.shape == (2,) for t in seen_t)


@pytest.mark.parametrize("name,karras", CASES)
def test_timesteps_match_diffusers(name, karras):
    for steps in (1, 7, 20, 30, 50):
        kwargs = dict(EASYANIMATE_KWARGS, **({"use_karras_sigmas": True} if karras else {}))
        scheduler = getattr(diffusers, SCHEDULERS[name])(**kwargs)
        scheduler.set_timesteps(steps)
        plan = make_plan(name, steps, karras)
        assert plan.timesteps.dtype == scheduler.timesteps.dtype
        assert torch.equal(plan.timesteps, scheduler.timesteps)
        if name != "ddim":  # DDIM keeps alphas_cumprod, not sigmas
            assert torch.equal(plan.sigmas, scheduler.sigmas.float())

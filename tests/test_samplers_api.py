"""Sampler driver, guidance and schedule behaviour that does not need diffusers."""

import pytest
import torch

from easyanimate_core.errors import InputError
from easyanimate_core.progress import Interrupted
from easyanimate_core.sampling.conditioning import Guidance
from easyanimate_core.sampling.guidance import eps_only, guide, uses_guidance
from easyanimate_core.sampling.samplers import sample
from easyanimate_core.sampling.schedule import SAMPLERS, NoiseSchedule, make_plan


def toy_eps(x, t, step=0):
    t = t.float().view(-1, *[1] * (x.ndim - 1)) / 1000
    return torch.tanh(0.7 * x + t) * (1 - 0.5 * t)


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_is_bitwise_reproducible(name):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(1, 4, 2, 4, 4, generator=g)
        return sample(toy_eps, noise, name, steps=6, generator=g)

    a, b = run(3), run(3)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(4))
    assert a.dtype == torch.float32 and torch.isfinite(a).all()


def test_euler_a_noise_comes_from_the_generator():
    noise = torch.randn(1, 4, 2, 4, 4)
    a = sample(toy_eps, noise, "euler_a", 6, generator=torch.Generator().manual_seed(1))
    b = sample(toy_eps, noise, "euler_a", 6, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_progress_reports_every_step_with_a_preview_and_can_interrupt():
    calls = []
    sample(toy_eps, torch.randn(1, 4, 1, 4, 4), "dpmpp_2m", steps=10, denoise=0.5,
           init_latents=torch.zeros(1, 4, 1, 4, 4),
           progress=lambda done, total, preview=None: calls.append((done, total, preview.shape)))
    assert [c[:2] for c in calls] == [(i, 5) for i in range(1, 6)]
    assert calls[0][2] == (1, 4, 1, 4, 4)

    def stop(done, total, preview=None):
        if done == 2:
            raise Interrupted()

    with pytest.raises(Interrupted):
        sample(toy_eps, torch.randn(1, 4, 1, 4, 4), "euler", steps=10, progress=stop)


def test_callback_can_replace_the_state():
    noise = torch.randn(1, 4, 1, 4, 4)
    clean = torch.full_like(noise, 0.25)
    plan = make_plan("unipc", 8)
    # keep everything pinned to the noised clean latents: the result must be the clean latents
    out = sample(toy_eps, noise, "unipc", 8,
                 callback=lambda i, x, d: plan.noised(clean, noise, i + 1))
    assert torch.allclose(out, clean, atol=1e-6)


def test_denoise_keeps_the_last_steps_and_starts_from_noised_input():
    plan = make_plan("ddim", 20, denoise=0.3)
    assert (plan.start, plan.steps) == (14, 6)
    init = torch.randn(1, 4, 1, 4, 4)
    first = []
    sample(lambda x, t, step: first.append(x.clone()) or toy_eps(x, t), torch.zeros_like(init), "ddim", 20,
           denoise=0.3, init_latents=init)
    alpha = (1 / (plan.sigmas[14] ** 2 + 1) ** 0.5)
    assert torch.allclose(first[0], alpha * init)  # zero noise: only the scaled clean latents remain


def test_cfg_combines_uncond_then_cond_and_rescales_like_diffusers():
    uncond, cond = torch.randn(2, 4, 2, 3, 3), torch.randn(2, 4, 2, 3, 3) * 2
    text = (torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool))

    def guidance(rescale):
        return Guidance(text, None, 2, 7.0, rescale, 4, "cpu", torch.float32)

    g = guidance(0.0)
    assert g.active and g.embeds.shape[0] == 4 and not g.mask[:2].any()  # [uncond (all padding), cond]
    assert torch.equal(g.batch(torch.tensor([5, 5])), torch.tensor([5, 5, 5, 5]))
    assert torch.allclose(g.eps(torch.cat([uncond, cond])), uncond + 7.0 * (cond - uncond))

    # diffusers' rescale_noise_cfg, written out
    cfg = uncond + 7.0 * (cond - uncond)
    std_text = cond.std(dim=list(range(1, cond.ndim)), keepdim=True)
    std_cfg = cfg.std(dim=list(range(1, cfg.ndim)), keepdim=True)
    expected = 0.7 * (cfg * (std_text / std_cfg)) + 0.3 * cfg
    assert torch.allclose(guidance(0.7).eps(torch.cat([uncond, cond])), expected)
    assert torch.equal(guide(uncond, cond, 7.0, 0.0), cfg)
    assert uses_guidance(7.0) and not uses_guidance(1.0)
    unguided = Guidance(text, None, 2, 1.0, 0.0, 4, "cpu", torch.float32)
    assert not unguided.active and torch.equal(unguided.eps(cond), cond)


def test_learned_sigma_half_is_dropped():
    out = torch.randn(1, 8, 1, 2, 2)
    assert torch.equal(eps_only(out, 4), out[:, :4])
    assert torch.equal(eps_only(out[:, :4], 4), out[:, :4])
    with pytest.raises(InputError, match="returned 6 channels"):
        eps_only(out[:, :6], 4)


def test_schedule_from_config():
    assert NoiseSchedule.from_config({"beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                                      "steps_offset": 1, "_class_name": "DPMSolverMultistepScheduler"}) \
        == NoiseSchedule()
    abar = NoiseSchedule().alphas_cumprod
    assert abar.shape == (1000,) and abs(abar[-1].item() - 4.035e-5) < 1e-7
    with pytest.raises(InputError, match="beta_schedule"):
        NoiseSchedule.from_config({"beta_schedule": "squaredcos_cap_v2"})
    with pytest.raises(InputError, match="prediction_type"):
        NoiseSchedule.from_config({"prediction_type": "v_prediction"})


@pytest.mark.parametrize("kwargs,message", [
    (dict(sampler="heun"), "sampler 'heun' is unknown"),
    (dict(sampler="ddim", karras=True), "karras sigmas are not available"),
    (dict(steps=0), "steps must be an integer"),
    (dict(steps=1001), "steps must be an integer"),
    (dict(sampler="ddim", steps=1000), "use at most 999 steps"),
    (dict(denoise=0.0), "denoise must be in"),
    (dict(steps=5, denoise=0.1), "keeps no step"),
    (dict(denoise=0.5), "needs init_latents"),
    (dict(denoise=0.5, init_latents=torch.zeros(1, 4, 2, 4, 4)), "init_latents have shape"),
])
def test_bad_options_raise_one_clear_error(kwargs, message):
    with pytest.raises(InputError, match=message):
        sample(toy_eps, torch.randn(1, 4, 1, 4, 4), **kwargs)

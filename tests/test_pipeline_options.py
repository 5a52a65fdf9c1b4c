"""The pipeline's boundary: sampling options are checked before any work with one-line errors, a
run whose latents turn non-finite stops at that step, and a cancel lands within one DiT block
(and between VAE windows)."""

import math

import pytest
import torch
from tiny_models import build_dit, build_vae

from easyanimate_core.errors import EasyAnimateError, InputError
from easyanimate_core.progress import Interrupted
from easyanimate_core.sampling.interrupt import with_interrupt
from easyanimate_core.sampling.options import SamplingOptions
from easyanimate_core.sampling.pipeline import denoise

TEXT = (torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(0)), torch.ones(1, 7, dtype=torch.bool))
LATENTS = torch.zeros(1, 4, 3, 4, 4)

BAD_OPTIONS = [
    (dict(cfg=math.nan), "cfg must be a finite number from 0 to 100, got nan"),
    (dict(cfg=math.inf), "cfg must be a finite number from 0 to 100, got inf"),
    (dict(cfg=-1.0), "cfg must be a finite number"),
    (dict(cfg="strong"), "cfg must be a number, got 'strong'"),
    (dict(strength=math.nan), "strength must be a finite number from 0 to 1"),
    (dict(strength=1.5), "strength must be a finite number from 0 to 1"),
    (dict(strength=0.0), "strength 0 of 25 steps would run no step"),
    (dict(steps=4, strength=0.2), "strength 0.2 of 4 steps would run no step"),
    (dict(seed=2 ** 64), "seed must be a whole number from 0 to 2\*\*64 - 1"),
    (dict(steps=0), "steps must be a whole number from 1 to 1000"),
    (dict(steps=2.5), "steps must be a whole number"),
    (dict(steps=True), "steps must be a whole number"),
    (dict(guidance_rescale=2.0), "guidance_rescale must be a finite number from 0 to 1"),
    (dict(guidance_rescale=math.nan), "guidance_rescale must be a finite number"),
    (dict(clip_apply_ratio=-0.1), "clip_apply_ratio must be a finite number from 0 to 1"),
    (dict(sampler="heun"), "sampler 'heun' is unknown; choose one of ddim"),
    (dict(sampler="ddim", karras=True), "karras sigmas are not available for sampler 'ddim'"),
    (dict(seed=-1), "seed must be a whole number from 0"),
    (dict(context=4), "context must be a ContextWindows"),
    (dict(interrupt=True), "interrupt must be a callable"),
]


@pytest.mark.parametrize("fields,message", BAD_OPTIONS)
def test_bad_options_fail_at_once_with_one_line(fields, message):
    with pytest.raises(InputError, match=message) as error:
        SamplingOptions(**fields)
    assert "\n" not in str(error.value) and ";" in str(error.value)  # what is wrong; how to fix it


def test_numbers_given_as_text_are_kept_as_the_floats_they_were_checked_as():
    options = SamplingOptions(cfg="7", strength="0.5")
    assert (options.cfg, options.strength) == (7.0, 0.5) and isinstance(options.strength, float)


@pytest.mark.parametrize("cfg,message", [
    ("nan", "cfg: expected a number >= 0, got nan"),                      # the option table's check
    ("200", "cfg must be a finite number from 0 to 100, got 200"),       # SamplingOptions' range
])
def test_the_cli_checks_numbers_before_loading_any_model(monkeypatch, cfg, message):
    import training.generate as cli

    def loading(config):
        raise AssertionError("models were loaded before the options were checked")

    monkeypatch.setattr(cli, "load_components", loading)
    with pytest.raises(InputError, match=message):
        cli.main("generate", ["--prompt", "a red circle", "--cfg", cfg])


def test_non_finite_latents_stop_the_run_at_their_step():
    dit = build_dit(4)
    calls = {"n": 0}

    def poison_second_call(module, args, output):
        calls["n"] += 1
        return output * math.nan if calls["n"] == 2 else output

    handle = dit.register_forward_hook(poison_second_call)
    try:
        with pytest.raises(EasyAnimateError, match="stopped at step 2 of 3: the latents are no longer finite") as error:
            denoise(dit, LATENTS, TEXT, options=SamplingOptions(steps=3, cfg=1.0, sampler="euler"))
    finally:
        handle.remove()
    message = str(error.value)
    assert "\n" not in message and "fp16 overflow" in message and "LoRA" in message and "NaN weights" in message
    assert calls["n"] == 2  # nothing ran after the step that went bad


@pytest.mark.parametrize("cut", [1, 3])
def test_cancel_lands_within_one_block(cut):
    """The interrupt flips after ``cut`` block calls; no further block runs, and the hooks are
    gone afterwards (a later run is not interrupted)."""
    dit = build_dit(4, layers=4)
    ran, checks = [], {"n": 0}
    spies = [block.register_forward_hook(lambda module, args, out, i=i: ran.append(i))
             for i, block in enumerate(dit.transformer_blocks)]

    def interrupt():
        checks["n"] += 1
        if len(ran) >= cut:
            raise Interrupted()

    try:
        with pytest.raises(Interrupted):
            denoise(dit, LATENTS, TEXT, options=SamplingOptions(steps=2, cfg=5.0, interrupt=interrupt))
        assert len(ran) == cut and checks["n"] == cut + 1  # inside the first step, right after block `cut`
        ran.clear()
        denoise(dit, LATENTS, TEXT, options=SamplingOptions(steps=1, cfg=5.0))
        assert len(ran) == 4 and checks["n"] == cut + 1
    finally:
        for spy in spies:
            spy.remove()


def test_cancel_lands_between_vae_windows():
    vae = build_vae()
    windows = []

    def interrupt():
        if windows:
            raise Interrupted()

    progress = with_interrupt(lambda done, total, preview=None: windows.append(done), interrupt)
    with pytest.raises(Interrupted), torch.no_grad():
        vae.decode(torch.zeros(1, 4, 9, 4, 4), progress=progress)
    assert windows == [1] and len(vae.decode_plan(9)) > 2  # stopped after the first of several windows


def test_the_sampler_node_cancels_through_the_host_within_a_block(pack, monkeypatch):
    from easyanimate_core.models.handle import ModelHandle

    nodes, host = pack.nodes.sampling_nodes, pack.nodes.host
    dit = build_dit(4, layers=4)
    ran = []
    spies = [block.register_forward_hook(lambda *a: ran.append(1)) for block in dit.transformer_blocks]

    def host_interrupt():
        if len(ran) >= 2:
            raise Interrupted()  # stands in for ComfyUI's InterruptProcessingException

    monkeypatch.setattr(host, "check_interrupt", host_interrupt)
    latent = {"samples": torch.zeros(1, 4, 3, 4, 4)}
    cond = [[TEXT[0], {}]]
    try:
        with pytest.raises(Interrupted):
            nodes.VDiT_Sampler().sample(ModelHandle(dit), cond, cond, latent, 1, 3, 5.0, "euler", "normal", 1.0)
    finally:
        for spy in spies:
            spy.remove()
    assert len(ran) == 2

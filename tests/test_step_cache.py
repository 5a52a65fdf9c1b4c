"""Step caching (easyanimate_core/sampling/step_cache.py): exactness at threshold 0, the skip rules,
closeness of cached runs, and every pipeline mode (CFG, samplers, context windows, 12-channel
inpaint with CLIP tokens, a LoRA applied)."""

import pytest
import torch
from tiny_models import build_dit

from easyanimate_core.errors import InputError
from easyanimate_core.models.lora import add_trainable_lora, remove_trainable_lora
from easyanimate_core.sampling.context import ContextWindows
from easyanimate_core.sampling.inpaint import InpaintCondition
from easyanimate_core.sampling.options import SamplingOptions
from easyanimate_core.sampling.pipeline import denoise
from easyanimate_core.sampling.step_cache import StepCache

ALWAYS = 1e9  # a threshold every change is below: only the rules (first / last / consecutive) stop skips


@pytest.fixture(scope="module")
def dit():
    return build_dit(4, layers=4)  # 4 blocks: U-ViT long skip and motion modules in the skipped part


@pytest.fixture(scope="module")
def cond():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 120, 32, generator=g), torch.ones(1, 120, dtype=torch.bool)


def run(model, cond, cache=None, steps=12, frames=3, inpaint=None, clip_embeds=None, **options):
    options = SamplingOptions(**{"cfg": 6.0, "seed": 1, **options}, steps=steps, step_cache=cache)
    return denoise(model, torch.zeros(1, 4, frames, 4, 4), cond, options=options, inpaint=inpaint,
                   clip_embeds=clip_embeds)


def window(start, stop):
    return tuple(range(start, stop))


def skipped_steps(cache, key=None):
    return [step for step, k in cache.skipped_steps if key is None or k == key]


def relative_error(out, ref):
    return float((out - ref).norm() / ref.norm())


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler", "unipc"])
def test_threshold_zero_is_bit_identical(dit, cond, sampler):
    cache = StepCache(0.0)
    assert torch.equal(run(dit, cond, cache, sampler=sampler), run(dit, cond, sampler=sampler))
    assert (cache.calls, cache.skipped) == (12, 0)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc"])
def test_positive_threshold_skips_and_stays_close(dit, cond, sampler):
    ref = run(dit, cond, sampler=sampler, steps=25)
    cache = StepCache(0.1)
    out = run(dit, cond, cache, sampler=sampler, steps=25)
    assert cache.calls == 25 and 3 <= cache.skipped <= 16
    assert not torch.equal(out, ref)
    # a cached run is far closer to its uncached run than another seed is
    assert relative_error(out, ref) < 0.1 * relative_error(run(dit, cond, sampler=sampler, steps=25, seed=2), ref)


def test_rules_first_last_and_consecutive(dit, cond):
    cache = StepCache(ALWAYS, max_consecutive=2)
    run(dit, cond, cache, steps=10)
    # full at 0, then two reuses after every full call, and the last step full
    assert skipped_steps(cache) == [1, 2, 4, 5, 7, 8]
    cache = StepCache(ALWAYS, max_consecutive=3)
    run(dit, cond, cache, steps=10)
    assert skipped_steps(cache) == [1, 2, 3, 5, 6, 7]


def test_video_to_video_counts_the_steps_it_runs(dit, cond):
    # strength 0.5 of 20 steps runs the last 10: the rules apply to those (first and last full)
    cache = StepCache(ALWAYS)
    video = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    out = denoise(dit, video, cond, options=SamplingOptions(steps=20, cfg=6.0, seed=1, strength=0.5,
                                                            step_cache=cache))
    assert cache.calls == 10 and skipped_steps(cache) == [1, 2, 4, 5, 7, 8]
    assert torch.isfinite(out).all()


def test_a_skipped_call_reuses_the_residual_of_everything_after_the_first_block(cond):
    # the same input twice: the first block's residual is unchanged, so the call is skipped and
    # first block + cached residual must give back the full output. Depth 6 has two U-ViT skips:
    # block 0 (the first block) -> 5 and block 1 (inside the skipped part) -> 4.
    dit = build_dit(4, layers=6)
    x = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    embeds = cond[0].expand(2, -1, -1)
    cache = StepCache(1e-3).begin(3)
    with torch.no_grad():
        full = dit(x, torch.tensor([500, 500]), embeds, step_cache=cache.at(0))
        reused = dit(x, torch.tensor([500, 500]), embeds, step_cache=cache.at(1))
        changed = dit(x * 1.5, torch.tensor([500, 500]), embeds, step_cache=cache.at(1))
    assert dit.options["uvit_skips"] == 2 and cache.skipped_steps == [(1, None)]
    torch.testing.assert_close(reused, full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed, full, atol=1e-2)  # a changed input ran the whole model
    assert cache.calls == 3


def test_cfg_branches_each_reuse_their_own_residual(dit, cond):
    # with guidance the DiT batch is [uncond, cond]; a skipped call must keep the two apart,
    # otherwise guidance (cond - uncond) would collapse on skipped steps
    ref = run(dit, cond, cfg=6.0, steps=25)
    cache = StepCache(ALWAYS)
    out = run(dit, cond, cache, cfg=6.0, steps=25)
    unguided = run(dit, cond, cfg=1.0, steps=25)
    assert cache.skipped > 0
    assert relative_error(out, ref) < relative_error(unguided, ref)


def test_context_windows_keep_one_cache_per_window(dit, cond):
    windows = ContextWindows(length=4, overlap=2, strides=1)  # contiguous windows only: three of them
    ref = run(dit, cond, frames=8, steps=25, context=windows)
    cache = StepCache(0.1)
    out = run(dit, cond, cache, frames=8, steps=25, context=windows)
    keys = {k for _, k in cache.skipped_steps}
    assert cache.calls == 25 * 3 and len(keys) >= 2  # three windows, more than one reused its own residual
    assert relative_error(out, ref) < 0.05
    rules = StepCache(ALWAYS)
    run(dit, cond, rules, frames=8, steps=10, context=windows)
    for start in (0, 2, 4):  # every window follows the rules on its own
        assert skipped_steps(rules, (window(start, start + 4), False)) == [1, 2, 4, 5, 7, 8]


def test_inpaint_12_channels_with_clip_tokens(cond):
    model = build_dit(12, layers=4)
    g = torch.Generator().manual_seed(5)
    mask = torch.zeros(1, 4, 3, 4, 4)
    mask[:, :, 0] = 1
    inpaint = InpaintCondition(encoded_mask=mask, encoded_kept_frames=torch.randn(1, 4, 3, 4, 4, generator=g))
    clip = torch.randn(1, 768, generator=g)
    options = {"steps": 10, "inpaint": inpaint, "clip_embeds": clip, "clip_apply_ratio": 0.5}
    ref = run(model, cond, **options)
    assert torch.equal(run(model, cond, StepCache(0.0), **options), ref)
    cache = StepCache(ALWAYS)
    out = run(model, cond, cache, **options)
    # the CLIP image switches on at step 5: new conditioning, new cache, so step 5 runs in full
    assert skipped_steps(cache) == [1, 2, 4, 6, 7]
    assert {k for _, k in cache.skipped_steps} == {(window(0, 3), False), (window(0, 3), True)}
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    close = StepCache(0.1)
    assert relative_error(run(model, cond, close, **dict(options, steps=25)),
                          run(model, cond, **dict(options, steps=25))) < 0.05


def test_a_lora_applied_acts_in_cached_runs(dit, cond):
    plain = run(dit, cond, steps=25)
    add_trainable_lora(dit, target="all", rank=4)
    try:
        with torch.no_grad():
            for adapter in dit.trainable_lora.values():
                adapter.up.normal_(0, 0.05)
        ref = run(dit, cond, steps=25)
        assert torch.equal(run(dit, cond, StepCache(0.0), steps=25), ref)
        cache = StepCache(0.1)
        out = run(dit, cond, cache, steps=25)
    finally:
        remove_trainable_lora(dit)
    assert cache.skipped > 0
    assert relative_error(out, ref) < 0.1 * relative_error(plain, ref)  # the LoRA's effect is kept


@pytest.mark.parametrize("options, message", [({"threshold": -0.1}, "threshold must be 0 or more"),
                                              ({"threshold": float("nan")}, "threshold must be 0 or more"),
                                              ({"max_consecutive": 0}, "max_consecutive must be a whole"),
                                              ({"max_consecutive": 1.5}, "max_consecutive must be a whole")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        StepCache(**options)


# ----- the command line and the Sampler node -------------------------------------------------------

def test_generate_flag_and_yaml_key(tmp_path, caplog):
    from tiny_models import save_model_folder

    from easyanimate_core.sampling.step_cache import DEFAULT_THRESHOLD
    from training.generate import main, parse, resolve_step_cache

    assert parse(["--prompt", "x", "--step-cache"])["step_cache"] is True
    assert parse(["--prompt", "x", "--step-cache", "0.25"])["step_cache"] == 0.25
    assert parse(["--prompt", "x"])["step_cache"] is None
    config = tmp_path / "g.yaml"
    config.write_text("prompt: x\nstep_cache: 0.3\n")
    assert parse(["--config", str(config)])["step_cache"] == 0.3
    assert resolve_step_cache(True).threshold == DEFAULT_THRESHOLD
    assert resolve_step_cache(0.3).threshold == 0.3 and resolve_step_cache(False) is None
    config.write_text("prompt: x\nstep_cache: fast\n")
    with pytest.raises(InputError, match="step_cache: expected true or false or a number >= 0"):
        parse(["--config", str(config)])
    with pytest.raises(InputError, match="step_cache: expected .* got -1"):
        main("generate", ["--prompt", "x", "--step-cache", "-1", "--model", str(tmp_path / "not-loaded")])
    model = save_model_folder(tmp_path / "release", in_channels=12)
    caplog.set_level("INFO", logger="easyanimate_core")
    assert main("generate", ["--model", str(model), "--width", "32", "--height", "32", "--steps", "6",
                             "--frames", "9", "--seam", "none", "--prompt", "a red car", "--step-cache", "1000",
                             "--output", str(tmp_path / "clip.mp4")]) == 0
    assert "step cache: 3 of 6 DiT calls skipped (threshold 1000)" in caplog.text
    # long-video chunks (28 frames as 16-frame chunks overlapping by 4: two chunks): one cache,
    # emptied per chunk, counting over all of them
    caplog.clear()
    assert main("generate", ["--model", str(model), "--width", "32", "--height", "32", "--steps", "6",
                             "--frames", "28", "--chunk-frames", "16", "--seam", "none", "--prompt", "a red car",
                             "--step-cache", "1000", "--output", str(tmp_path / "long.mp4")]) == 0
    assert "step cache: 6 of 12 DiT calls skipped (threshold 1000)" in caplog.text


def test_sampler_node_option(pack):
    from easyanimate_core.models.handle import ModelHandle

    node = pack.nodes.sampling_nodes.VDiT_Sampler
    spec = node.INPUT_TYPES()["optional"]
    assert list(spec)[-1] == "step_cache" and spec["step_cache"][1]["default"] == 0.0  # appended, off
    model = ModelHandle(build_dit(4, layers=4))
    g = torch.Generator().manual_seed(1)
    positive, negative = [[torch.randn(1, 7, 32, generator=g), {}]], [[torch.randn(1, 7, 32, generator=g), {}]]
    latent = {"samples": torch.zeros(1, 4, 3, 4, 4)}

    def sample(**optional):
        return node().sample(model, positive, negative, latent, 1, 8, 5.0, "dpmpp_2m", "normal", 1.0,
                             **optional)[0]["samples"]

    plain = sample()
    assert torch.equal(sample(step_cache=0.0), plain)
    cached = sample(step_cache=1000.0)
    assert torch.isfinite(cached).all() and not torch.equal(cached, plain)

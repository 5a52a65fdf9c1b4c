"""Sampling nodes with ComfyUI absent, on tiny models: empty latent, image-to-video conditioning,
context options and the sampler (text-, image- and video-to-video), and their error paths."""

import pytest
import torch
from tiny_models import build_clip, build_dit, build_vae

from easyanimate_core.errors import InputError
from easyanimate_core.models.handle import ModelHandle
from easyanimate_core.sampling.options import SamplingOptions

SIZE = 32  # pixels: 4x4 latents


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.nodes.sampling_nodes


@pytest.fixture(scope="module")
def vae():
    return build_vae()


@pytest.fixture(scope="module")
def dit4():
    return ModelHandle(build_dit(4))


@pytest.fixture(scope="module")
def dit12():
    return ModelHandle(build_dit(12))


def _cond(tokens=7, seed=1):
    return [[torch.randn(1, tokens, 32, generator=torch.Generator().manual_seed(seed)), {}]]


def _sample(nodes, model, positive, negative, latent, seed=1, steps=2, cfg=5.0, sampler="dpmpp_2m",
            scheduler="normal", denoise=1.0, **optional):
    return nodes.VDiT_Sampler().sample(model, positive, negative, latent, seed, steps, cfg, sampler, scheduler,
                                       denoise, **optional)[0]


def test_empty_latent_follows_the_vae_frame_rule(nodes, vae):
    node = nodes.VDiT_EmptyLatentVideo()
    assert node.generate(vae, SIZE, SIZE, 17, 2)[0]["samples"].shape == (2, 4, 5, 4, 4)
    assert node.generate(vae, SIZE, SIZE, 16, 1)[0]["samples"].shape == (1, 4, 4, 4, 4)
    assert node.generate(vae, SIZE, SIZE, 1, 1)[0]["samples"].shape == (1, 4, 1, 4, 4)
    # 20 frames -> 17 and 40 px -> 32: floored to valid values
    assert node.generate(vae, 40, SIZE, 20, 1)[0]["samples"].shape == (1, 4, 5, 4, 4)


def test_new_latent_nodes_default_to_what_the_shipped_model_makes(nodes):
    """A fresh node runs in seconds on a CPU: the shipped model's generate.yaml size and length."""
    from pathlib import Path

    import yaml

    made_for = yaml.safe_load((Path(__file__).resolve().parents[1] / "models" / "vdit_default" /
                               "generate.yaml").read_text())
    for node in (nodes.VDiT_EmptyLatentVideo, nodes.VDiT_ImageToVideo):
        inputs = node.INPUT_TYPES()["required"]
        defaults = {key: inputs[key][1]["default"] for key in ("width", "height", "length")}
        assert defaults == {"width": made_for["width"], "height": made_for["height"], "length": made_for["frames"]}
        assert "672x384" in inputs["width"][1]["tooltip"]  # the release sizes are one hover away


def test_empty_latent_rejects_a_foreign_vae(nodes):
    with pytest.raises(InputError, match="VDIT_VAE"):
        nodes.VDiT_EmptyLatentVideo().generate(object(), SIZE, SIZE, 17, 1)


def test_every_input_has_a_tooltip(pack):
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        if cls.__module__.rsplit(".", 1)[-1] not in ("sampling_nodes", "text_nodes", "clip_vision_nodes"):
            continue
        for group in cls.INPUT_TYPES().values():
            for name, spec in group.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_text_to_video_is_seeded_and_keeps_shape(nodes, vae, dit4):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 17, 1)[0]
    a = _sample(nodes, dit4, _cond(), _cond(1, 2), latent, seed=3)
    b = _sample(nodes, dit4, _cond(), _cond(1, 2), latent, seed=3)
    c = _sample(nodes, dit4, _cond(), _cond(1, 2), latent, seed=4)
    assert a["samples"].shape == latent["samples"].shape and a["samples"].dtype == torch.float32
    assert torch.equal(a["samples"], b["samples"])
    assert not torch.allclose(a["samples"], c["samples"])
    assert latent["samples"].abs().sum() == 0  # the input LATENT is not modified


def test_prompt_changes_the_result_and_masks_are_honoured(nodes, vae, dit4):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 9, 1)[0]
    base = _sample(nodes, dit4, _cond(), _cond(1, 2), latent)["samples"]
    other = _sample(nodes, dit4, _cond(seed=5), _cond(1, 2), latent)["samples"]
    assert not torch.allclose(base, other)
    # padding the positive to 120 tokens under a zero mask is the same conditioning
    embeds = _cond()[0][0]
    padded = torch.cat([embeds, torch.randn(1, 113, 32)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 113)], dim=1).long()
    same = _sample(nodes, dit4, [[padded, {"attention_mask": mask}]], _cond(1, 2), latent)["samples"]
    torch.testing.assert_close(same, base, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler,scheduler", [("ddim", "normal"), ("euler_a", "normal"), ("unipc", "karras")])
def test_sampler_options(nodes, vae, dit4, sampler, scheduler):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 8, 1)[0]
    out = _sample(nodes, dit4, _cond(), _cond(1, 2), latent, sampler=sampler, scheduler=scheduler, cfg=1.0)
    assert torch.isfinite(out["samples"]).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_cfg_is_refused_before_the_model_runs(nodes, vae, dit4, value):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 8, 1)[0]
    calls = []
    handle = dit4.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(InputError, match=f"cfg must be a finite number from 0 to 100, got {value}"):
            _sample(nodes, dit4, _cond(), _cond(), latent, cfg=value)
    finally:
        handle.remove()
    assert not calls


def test_karras_with_an_unsupported_sampler_says_so(nodes, vae, dit4):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 8, 1)[0]
    with pytest.raises(InputError, match="karras"):
        _sample(nodes, dit4, _cond(), _cond(), latent, sampler="ddim", scheduler="karras")


def test_image_to_video_keeps_the_start_and_end_frames_with_a_4_channel_model(nodes, vae, dit4):
    start, end = torch.rand(1, 40, 48, 3), torch.rand(1, SIZE, SIZE, 3)
    positive, negative, latent = nodes.VDiT_ImageToVideo().encode(_cond(), _cond(1, 2), vae, SIZE, SIZE, 17, 1,
                                                                   start_image=start, end_image=end)
    condition = positive[0][1][nodes.INPAINT_KEY]
    assert negative[0][1][nodes.INPAINT_KEY] is condition
    assert nodes.CLIP_EMBEDS_KEY not in positive[0][1]
    assert latent["samples"].shape == (1, 4, 5, 4, 4)
    assert condition.encoded_mask.shape == condition.encoded_kept_frames.shape == (1, 4, 5, 4, 4)
    assert condition.generate_mask[0, 0, :, 0, 0].tolist() == [0, 1, 1, 1, 0]
    out = _sample(nodes, dit4, positive, negative, latent)["samples"]
    # blending replaces the kept latent frames by the encoded images at the last (noise-free) step
    torch.testing.assert_close(out[:, :, 0], condition.video_latents[:, :, 0])
    torch.testing.assert_close(out[:, :, -1], condition.video_latents[:, :, -1])
    assert not torch.allclose(out[:, :, 2], condition.video_latents[:, :, 2])


def test_image_to_video_with_an_inp_model_uses_the_clip_embedding(nodes, vae, dit12, pack, tmp_path):
    from easyanimate_core.models.clip_vision import ClipImageEncoder

    clip = ClipImageEncoder(build_clip())
    start = torch.rand(1, SIZE, SIZE, 3)
    i2v = nodes.VDiT_ImageToVideo()
    positive, negative, latent = i2v.encode(_cond(), _cond(1, 2), vae, SIZE, SIZE, 9, 1, start_image=start,
                                            clip_vision=clip)
    embeds = positive[0][1][nodes.CLIP_EMBEDS_KEY]
    assert embeds.shape == (1, 768) and nodes.CLIP_EMBEDS_KEY not in negative[0][1]
    with_clip = _sample(nodes, dit12, positive, negative, latent, steps=2)["samples"]
    plain = [[c[0], {k: v for k, v in c[1].items() if k != nodes.CLIP_EMBEDS_KEY}] for c in positive]
    without = _sample(nodes, dit12, plain, negative, latent, steps=2)["samples"]
    assert not torch.allclose(with_clip, without)  # the CLIP tokens reach the DiT

    class NativeOutput:  # what native CLIP Vision Encode returns
        image_embeds = embeds

    positive2, _, _ = i2v.encode(_cond(), _cond(1, 2), vae, SIZE, SIZE, 9, 1, start_image=start,
                                 clip_vision_output=NativeOutput())
    torch.testing.assert_close(positive2[0][1][nodes.CLIP_EMBEDS_KEY], embeds)
    with pytest.raises(InputError, match="connect one of them"):
        i2v.encode(_cond(), _cond(), vae, SIZE, SIZE, 9, 1, start_image=start, clip_vision=clip,
                   clip_vision_output=NativeOutput())
    with pytest.raises(InputError, match="no start_image"):
        i2v.encode(_cond(), _cond(), vae, SIZE, SIZE, 9, 1, clip_vision=clip)


def test_image_to_video_rejects_too_many_images_and_bad_images(nodes, vae):
    i2v = nodes.VDiT_ImageToVideo()
    with pytest.raises(InputError, match="do not fit"):
        i2v.encode(_cond(), _cond(), vae, SIZE, SIZE, 1, 1, start_image=torch.rand(1, SIZE, SIZE, 3),
                   end_image=torch.rand(1, SIZE, SIZE, 3))
    with pytest.raises(InputError, match="start_image must be an IMAGE"):
        i2v.encode(_cond(), _cond(), vae, SIZE, SIZE, 9, 1, start_image=torch.rand(3, SIZE, SIZE))


def test_video_to_video_keeps_more_of_the_input_at_lower_denoise(pack, nodes, vae, dit4):
    frames = torch.rand(9, SIZE, SIZE, 3)
    encoded = pack.nodes.vae_nodes.VDiT_VAEEncode().encode(vae, frames)[0]
    low = _sample(nodes, dit4, _cond(), _cond(1, 2), encoded, steps=10, denoise=0.2)["samples"]
    high = _sample(nodes, dit4, _cond(), _cond(1, 2), encoded, steps=10, denoise=1.0)["samples"]
    source = encoded["samples"]
    assert (low - source).abs().mean() < (high - source).abs().mean()


def test_context_windows_run_the_model_per_window(nodes, vae, dit4):
    options = nodes.VDiT_ContextOptions().build(2, 1, "linear")[0]
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 17, 1)[0]
    windowed = _sample(nodes, dit4, _cond(), _cond(1, 2), latent, context_options=options)["samples"]
    whole = _sample(nodes, dit4, _cond(), _cond(1, 2), latent)["samples"]
    assert windowed.shape == whole.shape and not torch.allclose(windowed, whole)
    # a window as long as the clip is the plain run
    single = nodes.VDiT_ContextOptions().build(5, 1, "pyramid")[0]
    torch.testing.assert_close(_sample(nodes, dit4, _cond(), _cond(1, 2), latent, context_options=single)["samples"],
                               whole)


def test_context_options_errors(nodes):
    with pytest.raises(InputError, match="overlap"):
        nodes.VDiT_ContextOptions().build(4, 4, "pyramid")


@pytest.mark.parametrize("case,match", [
    ("image_latent", "5-D video LATENT"),
    ("combined", "single text encode"),
    ("not_conditioning", "not a CONDITIONING"),
    ("model", "VDIT_MODEL"),
    ("scheduler", "scheduler"),
    ("context", "Context Options"),
    ("inpaint_shape", "image-to-video node's own latent"),
])
def test_sampler_input_errors(nodes, vae, dit4, case, match):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 9, 1)[0]
    args = {"model": dit4, "positive": _cond(), "negative": _cond(), "latent": latent}
    optional, scheduler = {}, "normal"
    if case == "image_latent":
        args["latent"] = {"samples": torch.zeros(1, 4, 4, 4)}
    elif case == "combined":
        args["positive"] = _cond() + _cond()
    elif case == "not_conditioning":
        args["negative"] = "a cat"
    elif case == "model":
        args["model"] = object()
    elif case == "scheduler":
        scheduler = "exponential"
    elif case == "context":
        optional["context_options"] = {"length": 4}
    elif case == "inpaint_shape":
        args["positive"], args["negative"], _ = nodes.VDiT_ImageToVideo().encode(
            _cond(), _cond(), vae, SIZE, SIZE, 17, 1, start_image=torch.rand(1, SIZE, SIZE, 3))
    with pytest.raises(InputError, match=match):
        _sample(nodes, args["model"], args["positive"], args["negative"], args["latent"], scheduler=scheduler,
                **optional)


def test_sampler_applies_the_handles_patches_only_while_sampling(nodes, vae, dit4):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 9, 1)[0]
    before = {k: v.clone() for k, v in dit4.model.state_dict().items()}
    full = _sample(nodes, dit4, _cond(), _cond(1, 2), latent)["samples"]
    still = _sample(nodes, dit4.with_motion_scale(0.0), _cond(), _cond(1, 2), latent)["samples"]
    assert not torch.allclose(full, still)  # motion scale 0 turns the motion modules off
    after = dit4.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(block.attn_temporal.motion_scale == 1.0 for block in dit4.model.transformer_blocks
               if block.attn_temporal is not None)


def test_largest_seed_and_batched_image_to_video(nodes, vae, dit4, dit12):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 8, 1)[0]
    assert torch.isfinite(_sample(nodes, dit4, _cond(), _cond(), latent, seed=0xFFFFFFFFFFFFFFFF)["samples"]).all()
    positive, negative, batched = nodes.VDiT_ImageToVideo().encode(
        _cond(), _cond(1, 2), vae, SIZE, SIZE, 9, 2, start_image=torch.rand(1, SIZE, SIZE, 3))
    assert batched["samples"].shape == (2, 4, 3, 4, 4)
    for model in (dit4, dit12):
        out = _sample(nodes, model, positive, negative, batched)["samples"]
        assert out.shape == (2, 4, 3, 4, 4) and not torch.allclose(out[0], out[1])  # own noise per video


def test_text_to_video_with_an_inp_model_matches_the_generate_path(pack, nodes, vae, dit12, monkeypatch):
    """The sampler node gives a 12-channel model the encoded all-generated condition, as generate()."""
    from easyanimate_core.sampling import pipeline

    positive, negative = _cond(), _cond(1, 2)
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 9, 1)[0]
    node = _sample(nodes, dit12, positive, negative, latent, seed=7, steps=3)["samples"]
    monkeypatch.setattr(pipeline, "decode", lambda components, latents, **_: latents)  # keep the latents
    options = SamplingOptions(steps=3, cfg=5.0, seed=7)
    generated = pipeline.generate_encoded(pipeline.Components(dit12.model, vae), positive[0][0], negative[0][0],
                                          options, width=SIZE, height=SIZE, frames=9)
    torch.testing.assert_close(node, generated * vae.scaling_factor, atol=1e-5, rtol=1e-5)
    # the condition is encoded once per latent shape and is not all zeros
    key = pack.nodes.latent_conditions.ALL_GENERATED_KEY
    condition = latent[key](latent["samples"].shape)
    assert condition is latent[key](latent["samples"].shape)
    assert condition.encoded_mask.abs().sum() > 0 and condition.encoded_kept_frames.abs().sum() > 0


def test_inp_text_to_video_from_a_foreign_latent_warns(nodes, vae, dit12, caplog):
    latent = nodes.VDiT_EmptyLatentVideo().generate(vae, SIZE, SIZE, 9, 1)[0]
    bare = {"samples": latent["samples"]}
    with caplog.at_level("WARNING"):
        out = _sample(nodes, dit12, _cond(), _cond(1, 2), bare)["samples"]
    assert "all-zero" in caplog.text and torch.isfinite(out).all()
    assert not torch.allclose(out, _sample(nodes, dit12, _cond(), _cond(1, 2), latent)["samples"])


def test_video_to_video_with_an_inp_model_gets_the_all_generated_condition(pack, nodes, vae, dit12, caplog):
    """Latents from VAE Encode carry the all-generated condition too, so a 12-channel model in a
    video-to-video graph reads what the CLI gives it instead of zeros."""
    frames = torch.rand(9, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
    latent = pack.nodes.vae_nodes.VDiT_VAEEncode().encode(vae, frames)[0]
    with caplog.at_level("WARNING"):
        out = _sample(nodes, dit12, _cond(), _cond(1, 2), latent, denoise=0.6)["samples"]
    assert "all-zero" not in caplog.text and torch.isfinite(out).all()
    assert pack.nodes.latent_conditions.ALL_GENERATED_KEY in latent

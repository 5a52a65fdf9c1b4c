"""Frame / size rules, aspect buckets, context windows, inpaint conditioning, CLIP preprocessing."""

import logging

import pytest
import torch
from tiny_models import build_vae, save_clip

from easyanimate_core.errors import CheckpointError, InputError
from easyanimate_core.sampling import shape_rules as rules
from easyanimate_core.sampling.context import ContextWindows, fuse_windows
from easyanimate_core.sampling.inpaint import (
    encode_source,
    encode_units,
    fit_image,
    held_image_latents,
    image_to_video_source,
    latent_frame_spans,
    video_source,
)


@pytest.fixture(scope="module")
def vae():
    return build_vae()


def test_frame_counts_follow_the_slice_vae(vae, caplog):
    assert [f for f in range(1, 26) if rules.valid_frames(f, vae)] == [1, 8, 9, 16, 17, 24, 25]
    with caplog.at_level(logging.WARNING, logger="easyanimate_core"):
        assert rules.adjust_frames(17, vae) == 17
        assert not caplog.records
        assert rules.adjust_frames(15, vae) == 9
    assert "15 to 9 frames" in caplog.text and "1, 8, 9, 16, 17" in caplog.text
    with pytest.raises(InputError, match="at least 1"):
        rules.adjust_frames(0, vae)


def test_sizes_floor_to_the_vaes_multiple_with_a_log_line(vae, caplog):
    assert vae.spatial_factor == 8 and rules.size_multiple(vae) == 16
    with caplog.at_level(logging.WARNING, logger="easyanimate_core"):
        assert rules.adjust_size(64, 48, vae) == (64, 48)
        assert not caplog.records
        assert rules.adjust_size(70, 40, vae) == (64, 32)
    assert "70x40 to 64x32" in caplog.text and "8x downsampling" in caplog.text
    with pytest.raises(InputError, match="at least 16x16"):
        rules.adjust_size(8, 64, vae)


def test_a_4x_vae_takes_multiples_of_8_and_says_so(caplog):
    from pathlib import Path

    from easyanimate_core.models.vae import load_vae

    four_x = load_vae(Path(__file__).resolve().parents[1] / "models" / "vdit_default" / "vae")
    assert four_x.spatial_factor == 4 and rules.size_multiple(four_x) == 8
    with caplog.at_level(logging.WARNING, logger="easyanimate_core"):
        assert rules.adjust_size(40, 36, four_x) == (40, 32)
    assert "multiples of 8 (this VAE's 4x downsampling" in caplog.text


def test_latent_shape_and_buckets(vae):
    assert rules.latent_shape(vae, 17, 64, 32, batch=2) == (2, 4, 5, 4, 8)
    w, h = rules.bucket_size(1920, 1080, 512)
    assert w % 32 == 0 and h % 32 == 0 and abs(w / h - 16 / 9) < 0.1
    assert abs(w * h / 512 ** 2 - 1) < 0.1
    assert rules.bucket_size(100, 100, 512) == (512, 512)
    assert (w, h) == (672, 384)  # the published 0.57 bucket, as the reference's image-to-video node picks
    assert rules.bucket_size(1080, 1920, 768) == (576, 1008)  # 1.75 bucket scaled to 768
    with pytest.raises(InputError):
        rules.bucket_size(0, 10, 512)


def test_context_windows_cover_every_frame_and_end_at_the_end():
    options = ContextWindows(length=4, overlap=1)
    windows = options.windows(11)
    contiguous = [w for w in windows if w[-1] - w[0] == 3]
    assert [(w[0], w[-1] + 1) for w in contiguous] == [(0, 4), (3, 7), (6, 10), (7, 11)]
    # stride 2: spans of 8 frames stepping by 6, two interleaved windows each, the last at the end
    assert [w for w in windows if w not in contiguous] == [(0, 2, 4, 6), (1, 3, 5, 7), (3, 5, 7, 9), (4, 6, 8, 10)]
    assert ContextWindows(4, 1, strides=1).windows(11) == contiguous
    assert ContextWindows(16, 4).windows(9) == [tuple(range(9))]
    for bad in ({"length": 0}, {"length": 4, "overlap": 4}, {"fuse": "median"}, {"strides": 0}):
        with pytest.raises(InputError):
            ContextWindows(**bad)


@pytest.mark.parametrize("fuse", ["pyramid", "linear", "flat"])
def test_fusion_of_a_frame_wise_prediction_is_exact(fuse):
    # a model whose output for a frame does not depend on the window gives the same fused result
    target = torch.randn(2, 4, 13, 3, 3)
    options = ContextWindows(length=5, overlap=2, fuse=fuse)
    fused = fuse_windows(lambda w: target[:, :, list(w)], options.plan(13), target)
    torch.testing.assert_close(fused, target)


def test_linear_fusion_cross_fades_only_the_overlap():
    options = ContextWindows(length=4, overlap=2, fuse="linear", strides=1)
    first, second = options.windows(6)
    assert options.weights(first, 6).tolist() == pytest.approx([1, 1, 2 / 3, 1 / 3])
    assert options.weights(second, 6).tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1])
    fused = fuse_windows(lambda w: torch.full((1, 1, 4), float(w[0])), options.plan(6),
                         torch.zeros(1, 1, 6), frame_dim=2)
    assert fused[0, 0].tolist() == pytest.approx([0, 0, 2 / 3, 4 / 3, 2, 2])


def test_image_to_video_source_keeps_start_and_end_frames():
    start = torch.rand(2, 3, 32, 32)
    end = torch.rand(3, 32, 32)
    source = image_to_video_source(9, 32, 32, start, end)
    pixels, mask = source(0, 9)
    assert pixels.shape == (1, 3, 9, 32, 32) and mask.shape == (1, 1, 9, 32, 32)
    assert mask[0, 0, :, 0, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0]
    torch.testing.assert_close(pixels[0, :, 1], start[1] * 2 - 1)
    torch.testing.assert_close(pixels[0, :, 8], end * 2 - 1)
    with pytest.raises(InputError, match="do not fit"):
        image_to_video_source(2, 32, 32, start, end)


def test_fit_image_covers_and_centre_crops():
    image = torch.zeros(3, 20, 40)
    image[:, :, 10:30] = 1  # the middle half is white
    fitted = fit_image(image, 16, 16)
    assert fitted.shape == (1, 3, 16, 16) and fitted.mean() > 0.9
    with pytest.raises(InputError, match="RGB channels first"):
        fit_image(torch.zeros(20, 40, 3), 16, 16)


def test_unit_wise_encoding_equals_encoding_the_clip(vae):
    """encode_source builds pixels one VAE unit at a time (and reuses identical units): the
    result must equal encoding the whole clip at once."""
    start = torch.rand(1, 3, 32, 32)
    for frames in (17, 16, 1):
        assert encode_units(vae, frames)[-1][1] == frames
        source = image_to_video_source(frames, 32, 32, start)
        got = encode_source(vae, source, frames, vae.scaling_factor, want_mask=True, want_video=True)
        pixels, mask = source(0, frames)
        with torch.no_grad():
            masked = torch.where(mask > 0.5, torch.full_like(pixels, -1.0), pixels)
            expect = vae.encode(masked).mode() * vae.scaling_factor
            expect_mask = vae.encode(mask.expand(-1, 3, -1, -1, -1)).mode() * vae.scaling_factor
            expect_video = vae.encode(pixels).mode() * vae.scaling_factor
        assert torch.equal(got.encoded_kept_frames, expect)
        assert torch.equal(got.encoded_mask, expect_mask)
        assert torch.equal(got.video_latents, expect_video)


def test_inp_condition_marks_the_end_frame_as_kept(vae):
    """The 12-channel path keeps the reference's input (what its models were trained on): the
    end image sits in the masked video and the mask says kept, so the last latents differ from
    the all-generated condition's, while the first two latent frames are identical. The latent
    frame right before the end's is not compared: the VAE's temporal layers carry some of the end
    image into it (it differs by a few hundredths here)."""
    from easyanimate_core.sampling.inpaint import all_generated_condition

    end = torch.rand(3, 32, 32)
    with_end = encode_source(vae, image_to_video_source(16, 32, 32, end=end), 16, vae.scaling_factor,
                             want_mask=True, want_video=False)
    free = all_generated_condition(vae, 16, 32, 32)
    for field in ("encoded_mask", "encoded_kept_frames"):
        ours, theirs = getattr(with_end, field), getattr(free, field)
        assert torch.equal(ours[:, :, :2], theirs[:, :, :2]) and not torch.allclose(ours[:, :, 3], theirs[:, :, 3])


def test_latent_frame_spans_follow_the_slice_vae(vae):
    assert latent_frame_spans(vae, 16) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert latent_frame_spans(vae, 9) == [(0, 1), (1, 5), (5, 9)]
    assert latent_frame_spans(vae, 1) == [(0, 1)]


def test_held_latents_are_each_sides_image_as_a_still(vae):
    """The 4-channel condition holds the latents that decode to kept frames, and each holds the
    encoding of a still of its own image (the end latent of 16 frames is not [start x3, end])."""
    start, end = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    got = held_image_latents(vae, 16, 32, 32, start, end)
    assert got.generate_mask[0, 0, :, 0, 0].tolist() == [0, 1, 1, 0]
    with torch.no_grad():
        still = lambda image: vae.encode((image * 2 - 1)[None, :, None].expand(1, 3, 8, 32, 32)).mode()
        torch.testing.assert_close(got.video_latents[:, :, 0], still(start)[:, :, 0] * vae.scaling_factor)
        torch.testing.assert_close(got.video_latents[:, :, 3], still(end)[:, :, 1] * vae.scaling_factor)
    assert got.video_latents[:, :, 1:3].eq(0).all()
    only_end = held_image_latents(vae, 17, 32, 32, end=end)
    assert only_end.generate_mask[0, 0, :, 0, 0].tolist() == [1, 1, 1, 1, 0]
    two_start = held_image_latents(vae, 9, 32, 32, torch.rand(2, 3, 32, 32))
    assert two_start.generate_mask[0, 0, :, 0, 0].tolist() == [0, 0, 1]  # frame 1 lies in latent 1
    with pytest.raises(InputError, match="do not fit"):
        held_image_latents(vae, 1, 32, 32, start, end)


def test_video_source_rejects_batches_and_wrong_layouts():
    with pytest.raises(InputError, match="one video"):
        video_source(torch.rand(2, 3, 8, 32, 32), 32, 32)
    with pytest.raises(InputError, match="3, frames"):
        video_source(torch.rand(8, 3, 32, 32), 32, 32)
    pixels, mask = video_source(torch.rand(3, 8, 32, 32), 32, 32)(2, 6)
    assert pixels.shape == (1, 3, 4, 32, 32) and mask.eq(1).all()


def test_clip_preprocessing_matches_transformers(tmp_path):
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor

    from easyanimate_core.models.clip_vision import ClipImageEncoder

    encoder = ClipImageEncoder.load(str(save_clip(tmp_path / "image_encoder")))
    generator = torch.Generator().manual_seed(0)
    # a smooth image (real photos are smooth at 224 px); noise would only test resampling kernels
    small = torch.rand(1, 3, 6, 9, generator=generator)
    image = torch.nn.functional.interpolate(small, size=(300, 450), mode="bilinear")[0]
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    expect = CLIPImageProcessor.from_pretrained(tmp_path / "image_encoder")(
        images=Image.fromarray(array), return_tensors="pt")["pixel_values"]
    ours = encoder.preprocess(torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255)
    assert ours.shape == expect.shape == (1, 3, 224, 224)
    assert (ours - expect).abs().mean() < 0.01
    embeds = encoder.encode(image[None])
    assert embeds.shape == (1, 768) and encoder.embed_dim == 768
    with pytest.raises(InputError, match="channels first"):
        encoder.preprocess(torch.rand(1, 32, 32, 3))


def test_clip_loader_errors_name_the_folder(tmp_path):
    from easyanimate_core.models.clip_vision import ClipImageEncoder

    with pytest.raises(CheckpointError, match="image_encoder"):
        ClipImageEncoder.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=str(tmp_path.name)):
        ClipImageEncoder.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable config.json"):
        ClipImageEncoder.load(str(tmp_path))


def test_clip_loader_rejects_other_models_and_weights_that_do_not_fit(tmp_path):
    """Nothing loads with random weights: a foreign model type, or missing / unexpected /
    mis-shaped weights, is one CheckpointError naming the folder."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from easyanimate_core.models.clip_vision import ClipImageEncoder

    good = save_clip(tmp_path / "image_encoder")
    weights = load_file(good / "model.safetensors")

    def variant(name, config=None, tensors=None):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        if config is not None:
            (folder / "config.json").write_text(json.dumps(config))
        if tensors is not None:
            save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        return str(folder)

    t5_like = {"model_type": "t5", "architectures": ["T5EncoderModel"], "d_model": 32}
    with pytest.raises(CheckpointError, match=r"t5_config.*model_type 't5'"):
        ClipImageEncoder.load(variant("t5_config", config=t5_like))
    no_projection = {k: v for k, v in weights.items() if not k.startswith("visual_projection")}
    with pytest.raises(CheckpointError, match=r"no_projection.*missing visual_projection.weight"):
        ClipImageEncoder.load(variant("no_projection", tensors=no_projection))
    extra = {**weights, "text_model.embeddings.token_embedding.weight": torch.zeros(4, 32)}
    with pytest.raises(CheckpointError, match=r"extra.*unexpected text_model"):
        ClipImageEncoder.load(variant("extra", tensors=extra))
    resized = {**weights, "visual_projection.weight": torch.zeros(512, 32)}
    with pytest.raises(CheckpointError, match="resized"):
        ClipImageEncoder.load(variant("resized", tensors=resized))

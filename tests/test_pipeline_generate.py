"""End-to-end generation on tiny models loaded from release-shaped folders: t2v, t2i, i2v
(start + end), v2v and long video are bitwise reproducible and write playable files."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from tiny_models import load_components, save_model_folder

from easyanimate_core.errors import InputError
from easyanimate_core.progress import Interrupted
from easyanimate_core.sampling.context import ContextWindows
from easyanimate_core.sampling.long_video import iter_long_video, plan_chunks
from easyanimate_core.sampling.options import SamplingOptions
from easyanimate_core.sampling.pipeline import Components, denoise, encode_condition, encode_prompts, generate
from easyanimate_core.video_io import read_video, write_video

SIZE = {"width": 32, "height": 32}
PROMPT = "a red car drives along a winding mountain road"


@pytest.fixture(scope="module")
def inp_root(tmp_path_factory):
    return save_model_folder(tmp_path_factory.mktemp("inp"), in_channels=12)


@pytest.fixture(scope="module")
def inp(inp_root):
    return load_components(inp_root)


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    return load_components(save_model_folder(tmp_path_factory.mktemp("t2v"), in_channels=4))


def image(seed, height=40, width=48):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def written(tmp_path, video, name="out.mp4"):
    """Write (1, 3, F, H, W) in [0, 1] the way the CLI does and read it back."""
    frames = (video[0].permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()
    path = write_video(tmp_path / name, frames, fps=8)
    if path.endswith(".png"):
        from PIL import Image

        return np.asarray(Image.open(path))[None]
    return read_video(path)[0]


@contextmanager
def spy_forward(model):
    """Record the keyword arguments of every DiT call."""
    calls, forward = [], model.forward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return forward(*args, **kwargs)

    model.forward = spy
    try:
        yield calls
    finally:
        del model.forward


def twice(components, *args, **kwargs):
    first = generate(components, *args, **kwargs)
    second = generate(components, *args, **kwargs)
    assert torch.equal(first, second), "the same seed must give the same video bit for bit"
    return first


def test_text_to_video_is_reproducible_and_playable(inp, t2v, tmp_path):
    for components in (inp, t2v):
        video = twice(components, PROMPT, "blurry", options=SamplingOptions(steps=2, seed=5), frames=9, **SIZE)
        assert video.shape == (1, 3, 9, 32, 32) and video.dtype == torch.float32
        assert 0 <= video.min() and video.max() <= 1
        assert not torch.equal(video, generate(components, PROMPT, "blurry", options=SamplingOptions(steps=2, seed=6), frames=9, **SIZE))
        assert written(tmp_path, video).shape == (9, 32, 32, 3)


def test_text_to_image_writes_a_png(inp, tmp_path):
    picture = twice(inp, PROMPT, options=SamplingOptions(steps=2), frames=1, **SIZE)
    assert picture.shape == (1, 3, 1, 32, 32)
    assert written(tmp_path, picture).shape == (1, 32, 32, 3)
    assert (tmp_path / "out.png").is_file()


def test_image_to_video_with_start_and_end_images(inp, tmp_path):
    with spy_forward(inp.transformer) as calls:
        video = twice(inp, PROMPT, "blurry", options=SamplingOptions(steps=4), frames=17, start_image=image(1), end_image=image(2),
                      **SIZE)
    assert video.shape == (1, 3, 17, 32, 32)
    assert written(tmp_path, video).shape == (17, 32, 32, 3)
    # CLIP tokens: never in the negative branch, in the positive one for the last half of the steps
    masks = [call["clip_attention_mask"] for call in calls[:4]]
    assert [bool(m[0].any()) for m in masks] == [False] * 4
    assert [bool(m[1].all()) for m in masks] == [False, False, True, True]
    assert not torch.equal(video, generate(inp, PROMPT, "blurry", options=SamplingOptions(steps=4), frames=17, **SIZE))


def test_video_to_video_runs_the_last_steps(inp, t2v, tmp_path):
    source = generate(t2v, PROMPT, options=SamplingOptions(steps=2, seed=3), frames=17, **SIZE)[0]
    for components in (inp, t2v):
        with spy_forward(components.transformer) as calls:
            video = twice(components, "a dog runs", options=SamplingOptions(steps=4, strength=0.5), frames=17, video=source, **SIZE)
        assert len(calls) == 2 * 2, "strength 0.5 of 4 steps runs the last 2 (twice: reproducibility)"
        assert written(tmp_path, video).shape == (17, 32, 32, 3)
    with pytest.raises(InputError, match="needs an input video"):
        generate(t2v, PROMPT, options=SamplingOptions(steps=2, strength=0.5), frames=9, **SIZE)
    with pytest.raises(InputError, match="has 17 frames but 25"):
        generate(t2v, PROMPT, options=SamplingOptions(steps=2, strength=0.5), frames=25, video=source, **SIZE)


def test_denoise_strength_keeps_more_of_the_input_when_low(t2v):
    cond, uncond = encode_prompts(t2v, PROMPT, "blurry")
    start = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    distance = {}
    for strength in (0.25, 1.0):
        out = denoise(t2v.transformer, start, cond, uncond, options=SamplingOptions(steps=8, strength=strength, seed=1))
        distance[strength] = (out - start).abs().mean()
    assert distance[0.25] < distance[1.0] / 2


def test_four_channel_model_keeps_the_start_image_by_blending(t2v):
    """Reference 4-channel conditioning: the kept latents are re-imposed after every step, at the
    final step noise-free, so the first latent frame is exactly the start image's."""
    condition = encode_condition(t2v.vae, 9, 32, 32, start_image=image(4, 32, 32), inp=False)
    assert condition.encoded_mask is None and condition.generate_mask[0, 0, :, 0, 0].tolist() == [0, 1, 1]
    cond, uncond = encode_prompts(t2v, PROMPT)
    scale = t2v.vae.scaling_factor
    out = denoise(t2v.transformer, torch.zeros(1, 4, 3, 4, 4), cond, uncond, options=SamplingOptions(steps=3, seed=2),
                  scaling_factor=scale, inpaint=condition)
    torch.testing.assert_close(out[:, :, 0] * scale, condition.video_latents[:, :, 0])
    free = denoise(t2v.transformer, torch.zeros(1, 4, 3, 4, 4), cond, uncond, options=SamplingOptions(steps=3, seed=2),
                   scaling_factor=scale)
    assert (free[:, :, 0] * scale - condition.video_latents[:, :, 0]).abs().mean() > 0.1
    # a graph node without the model builds both forms; the 4-channel model takes the blend part
    both = encode_condition(t2v.vae, 9, 32, 32, start_image=image(4, 32, 32))
    assert both.encoded_mask is not None and torch.equal(both.video_latents, condition.video_latents)
    assert torch.equal(out, denoise(t2v.transformer, torch.zeros(1, 4, 3, 4, 4), cond, uncond, options=SamplingOptions(steps=3, seed=2),
                                    scaling_factor=scale, inpaint=both))


def test_context_windows_generate_long_clips_reproducibly(inp, tmp_path):
    windows = ContextWindows(length=3, overlap=1, fuse="linear")
    video = twice(inp, PROMPT, options=SamplingOptions(steps=2, context=windows), frames=33, **SIZE)
    assert video.shape == (1, 3, 33, 32, 32)
    assert written(tmp_path, video).shape == (33, 32, 32, 3)
    # one window that covers every latent frame is the plain pass (up to the fusion division)
    whole = generate(inp, PROMPT, options=SamplingOptions(steps=2, context=ContextWindows(length=9)), frames=33, **SIZE)
    torch.testing.assert_close(whole, generate(inp, PROMPT, options=SamplingOptions(steps=2), frames=33, **SIZE), atol=1e-5, rtol=0)


def test_chunked_long_video_streams_reproducible_pieces(inp, tmp_path):
    assert plan_chunks(28, 16, 4, inp.vae) == [(0, 16), (12, 16)]
    assert plan_chunks(9, 16, 4, inp.vae) == [(0, 9)]

    def run():
        pieces = list(iter_long_video(inp, PROMPT, options=SamplingOptions(steps=2), frames=28, chunk_frames=16, overlap_frames=4, start_image=image(7), **SIZE))
        return pieces, torch.cat(pieces, dim=2)

    pieces, video = run()
    assert torch.equal(video, run()[1])
    assert [p.shape[2] for p in pieces] == [12, 4, 12]  # chunk 1 minus overlap, cross-fade, rest
    assert written(tmp_path, video).shape == (28, 32, 32, 3)
    with pytest.raises(InputError, match="at most half a chunk"):
        plan_chunks(40, 16, 9, inp.vae)
    with pytest.raises(InputError, match="start image but no end image"):
        next(iter_long_video(inp, PROMPT, frames=28, end_image=image(1), **SIZE))


def test_offload_and_half_precision(inp, inp_root):
    from easyanimate_core.models.transformer import load_transformer

    offloaded = Components(inp.transformer, inp.vae, inp.text_encoder, inp.clip, offload=True)
    full = generate(inp, PROMPT, options=SamplingOptions(steps=2), frames=9, **SIZE)
    assert torch.equal(generate(offloaded, PROMPT, options=SamplingOptions(steps=2), frames=9, **SIZE), full)
    half = Components(load_transformer(inp_root, dtype=torch.bfloat16), inp.vae, inp.text_encoder)
    video = generate(half, PROMPT, options=SamplingOptions(steps=2), frames=9, **SIZE)
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    assert 0 < (video - full).abs().mean() < 0.1


def test_progress_reports_each_step_and_cancels(inp):
    seen = []

    def report(done, total, preview=None):
        seen.append((done, total))
        if total == 3 and done == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        generate(inp, PROMPT, options=SamplingOptions(steps=3), frames=9, progress=report, **SIZE)
    assert (1, 3) in seen and (2, 3) in seen and (3, 3) not in seen


def test_image_to_video_needs_a_clip_model(inp):
    no_clip = Components(inp.transformer, inp.vae, inp.text_encoder)
    with pytest.raises(InputError, match="CLIP image encoder"):
        generate(no_clip, PROMPT, options=SamplingOptions(steps=2), frames=9, start_image=image(1), **SIZE)

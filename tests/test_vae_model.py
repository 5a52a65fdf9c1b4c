"""Video VAE: released layout on meta, frame arithmetic, slice schedule, padding, context sharing."""

import json
from pathlib import Path

import pytest
import torch

from easyanimate_core.errors import CheckpointError, InputError
from easyanimate_core.models.vae import VideoVAE
from easyanimate_core.models.vae.layers import CAUSAL, FIRST_FRAME, SLICE, CausalConv3d, SpatialUpsampler3D

# The key/shape listing of the released v3 slice VAE, shipped with the tests (no weights in it).
MANIFEST = Path(__file__).resolve().parent / "fixtures" / "manifests" / "easyanimate_v3_slice_vae.json"

V3 = {"slice_compression_vae": True, "mini_batch_encoder": 8, "mini_batch_decoder": 2}
V2 = {"slice_compression_vae": False, "mini_batch_encoder": 9, "mini_batch_decoder": 3}


def tiny(**overrides):
    torch.manual_seed(0)
    cfg = {"ch": 8, "ch_mult": [1, 2, 2, 2], "norm_num_groups": 4, **V3, **overrides}
    vae = VideoVAE(cfg).eval()
    with torch.no_grad():  # move the norms off identity so every path carries signal
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return vae


def meta_vae(**overrides):
    with torch.device("meta"):
        return VideoVAE({**V3, **overrides})


def test_released_v3_layout_on_meta_matches_manifest():
    manifest = json.loads(MANIFEST.read_text())
    kwargs = manifest["config"]["constructor kwargs"]
    with torch.device("meta"):
        vae = VideoVAE(kwargs)
    ours = {k: list(v.shape) for k, v in vae.state_dict().items()}
    theirs = {t["name"]: t["shape"] for t in manifest["tensors"]}
    assert len(ours) == len(theirs) == 248
    assert ours == theirs
    assert sum(p.numel() for p in vae.parameters()) == manifest["summary"]["num_parameters"] == 245_979_879


@pytest.mark.parametrize("frames, latents, decoded", [
    (1, 1, 1), (8, 2, 8), (9, 3, 9), (16, 4, 16), (17, 5, 17), (144, 36, 144), (145, 37, 145)])
def test_slice_frame_arithmetic(frames, latents, decoded):
    vae = meta_vae()
    assert vae.latent_frames(frames) == latents
    assert vae.decoded_frames(latents) == decoded


@pytest.mark.parametrize("frames, latents, decoded", [(1, 1, 1), (9, 3, 9), (18, 6, 18), (144, 48, 144)])
def test_causal_chunk_arithmetic(frames, latents, decoded):
    vae = meta_vae(**V2)
    assert vae.latent_frames(frames) == latents
    assert vae.decoded_frames(latents) == decoded


def test_real_shapes_odd_and_even_both_modes():
    for mode, cases in ((V3, [(1, 1), (8, 2), (16, 4), (17, 5)]), (V2, [(1, 1), (9, 3), (18, 6)])):
        vae = tiny(**mode)
        for frames, latents in cases:
            video = torch.rand(2, 3, frames, 16, 24) * 2 - 1
            with torch.no_grad():
                posterior = vae.encode(video)
                assert posterior.mean.shape == (2, 4, latents, 2, 3)
                assert vae.decode(posterior.mean).shape == video.shape


def test_zero_padding_in_slice_mode_replicate_in_causal_mode():
    conv = CausalConv3d(1, 1, kernel_size=(3, 1, 1), padding=0)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0] = 1.0  # output t = input t-1 (slice) / t-2 (causal)
        conv.bias.zero_()
    x = torch.arange(1.0, 5.0).view(1, 1, 4, 1, 1)
    assert conv(x, SLICE).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert conv(x, CAUSAL).flatten().tolist() == [1.0, 1.0, 1.0, 2.0]
    # symmetric: the last output sees one zero frame after the clip
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 2] = 1.0
    assert conv(x, SLICE).flatten().tolist() == [2.0, 3.0, 4.0, 0.0]


@pytest.mark.parametrize("mode", [CAUSAL, FIRST_FRAME, SLICE])
@pytest.mark.parametrize("stride,pad_bottom_right", [(1, False), ((2, 2, 2), True), ((1, 2, 2), True)])
def test_a_lone_frame_convolves_as_its_padded_clip_would(mode, stride, pad_bottom_right):
    """One frame takes a 2-D shortcut (the kernel's taps summed, or its centre tap); output and
    gradients must be those of the 3-D convolution over the frame padded as the mode pads it."""
    torch.manual_seed(0)
    conv = CausalConv3d(4, 6, stride=stride, padding=0 if pad_bottom_right else 1)
    x = torch.randn(2, 4, 1, 8, 8, requires_grad=True)
    y = conv(x, mode, pad_bottom_right=pad_bottom_right)
    y.square().sum().backward()
    got = (y.detach(), x.grad, conv.weight.grad)

    x.grad = conv.weight.grad = None
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1) if pad_bottom_right else (0, 0, 0, 0))
    padded = (torch.cat([padded] * 3, dim=2) if mode == CAUSAL
              else torch.nn.functional.pad(padded, (0, 0, 0, 0, 1, 1)))
    want = torch.nn.functional.conv3d(padded, conv.weight, conv.bias, conv.stride, conv.padding)
    want.square().sum().backward()
    assert y.shape == want.shape and y.shape[2] == 1
    for a, b in zip(got, (want.detach(), x.grad, conv.weight.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_temporal_upsampling_per_mode():
    up = SpatialUpsampler3D(4, temporal=True)
    x = torch.randn(1, 4, 3, 2, 2)
    assert up(x, SLICE).shape[2] == 6
    assert up(x, CAUSAL).shape[2] == 5
    assert up(x, FIRST_FRAME).shape[2] == 3


def test_encoder_slices_are_independent():
    vae = tiny()
    video = torch.rand(1, 3, 17, 16, 16) * 2 - 1
    edited = video.clone()
    edited[:, :, 9:17] = 0  # the second 8-frame slice (frame 0 is encoded alone)
    with torch.no_grad():
        a, b = vae.encode(video).mean, vae.encode(edited).mean
    assert torch.equal(a[:, :, :3], b[:, :, :3])  # lone frame + first slice untouched
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:])
    edited = video.clone()
    edited[:, :, 8] = 0  # last frame of the first slice reaches that slice's first latent (non-causal)
    with torch.no_grad():
        c = vae.encode(edited).mean
    assert not torch.allclose(a[:, :, 1], c[:, :, 1])


def test_decoder_shares_neighbour_slices_only_through_context():
    vae = tiny()
    z = torch.randn(1, 4, 7, 2, 2)  # lone latent + slices [1,3) [3,5) [5,7)
    with torch.no_grad():
        base = vae.decode(z)

        def changed(latent):
            edited = z.clone()
            edited[:, :, latent] += 1.0
            out = vae.decode(edited)
            return [not torch.allclose(out[:, :, a:b], base[:, :, a:b]) for a, b in ((0, 1), (1, 9), (9, 17), (17, 25))]

    # the lone first latent is nobody's context
    assert changed(0) == [True, False, False, False]
    # a slice's latents are context for the slices before and after it, and for no other
    assert changed(3) == [False, True, True, True]
    assert changed(5) == [False, False, True, True]
    assert changed(1) == [False, True, True, False]


def test_decode_windows_stay_bounded():
    vae = tiny()
    seen = []
    original = vae.decoder.forward

    def record(z, mode, keep=None):
        seen.append(z.shape[2])
        return original(z, mode, keep)

    vae.decoder.forward = record
    with torch.no_grad():
        out = vae.decode(torch.randn(1, 4, 36, 2, 2))
    assert out.shape[2] == 144
    assert len(seen) == 18 and max(seen) == 3 * vae.mini_batch_decoder


def test_posterior_sampling_is_seeded_and_chunked_like_the_pipelines():
    vae = tiny(**V2)
    video = torch.rand(1, 3, 18, 16, 16) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(video)
    assert posterior.draw_sizes == [3, 3]
    a = posterior.sample(torch.Generator().manual_seed(1))
    b = posterior.sample(torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(1)
    eps = torch.cat([torch.randn(1, 4, 3, 2, 2, generator=g), torch.randn(1, 4, 3, 2, 2, generator=g)], 2)
    assert torch.allclose(a, posterior.mean + posterior.std * eps)
    assert posterior.mode() is posterior.mean
    assert posterior.kl().shape == (1,) and posterior.kl().item() > 0


def test_half_precision_storage_and_upcast():
    vae = tiny()
    video = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    with torch.no_grad():
        reference = vae.encode(video).mean
        vae.to(torch.bfloat16)
        low = vae.encode(video).mean
        assert low.dtype == torch.bfloat16
        vae.to(torch.float16)
        half = vae.decode(vae.encode(video).mean)
        vae.compute_dtype = torch.float32
        upcast = vae.encode(video).mean
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    assert upcast.dtype == torch.float32
    assert (low.float() - reference).abs().max() < 0.1
    assert (upcast - reference).abs().max() < 5e-3


def test_bad_inputs_say_what_to_do():
    vae = tiny()
    with pytest.raises(InputError, match="divisible by 8"):
        vae.encode(torch.zeros(1, 3, 8, 20, 16))
    with pytest.raises(InputError, match="frames to dim 2"):
        vae.encode(torch.zeros(1, 8, 16, 16))
    with pytest.raises(InputError, match="unsqueeze"):
        vae.decode(torch.zeros(1, 4, 2, 2))
    with pytest.raises(InputError, match="unknown seam"):
        vae.decode(torch.zeros(1, 4, 2, 2, 2), seam="fancy")
    with pytest.raises(InputError, match="blend"):
        tiny(**V2).decode(torch.zeros(1, 4, 3, 2, 2), seam="blend")


def test_config_is_parsed_as_data_never_evaluated():
    cfg = {**V3, "down_block_types": '("SpatialDownBlock3D", "SpatialTemporalDownBlock3D", '
                                     '"SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D")'}
    assert meta_vae(**cfg).config["down_block_types"][1] == "SpatialTemporalDownBlock3D"
    with pytest.raises(CheckpointError, match="unsupported block type"):
        meta_vae(down_block_types="__import__('os').system('true')")
    with pytest.raises(CheckpointError, match="unsupported block type"):
        meta_vae(up_block_types=["SpatialUpBlock3D", "SpatialAttnUpBlock3D", "SpatialUpBlock3D", "SpatialUpBlock3D"])
    with pytest.raises(CheckpointError, match="one block type per level"):
        meta_vae(down_block_types=["SpatialDownBlock3D"])
    with pytest.raises(CheckpointError, match="norm_num_groups"):
        meta_vae(norm_num_groups=48)
    with pytest.raises(CheckpointError, match="block_out_channels"):
        meta_vae(block_out_channels=[128, 256, 512, 1024])
    with pytest.raises(CheckpointError, match="mid_block_attention_type"):
        meta_vae(mid_block_attention_type="spatial")
    with pytest.raises(CheckpointError, match="mini_batch_decoder"):
        meta_vae(mini_batch_decoder=0)

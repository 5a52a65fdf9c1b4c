"""Seam options (blend / smooth), the seam metric, and spatial tiling."""

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from easyanimate_core.errors import InputError
from easyanimate_core.models.vae import Tiling, VideoVAE, seam_ratio
from easyanimate_core.models.vae.tiling import run_tiled, tile_starts
from easyanimate_core.models.vae.windows import Window


def tiny(**overrides):
    torch.manual_seed(0)
    cfg = {"ch": 8, "ch_mult": [1, 2, 2, 2], "norm_num_groups": 4, "slice_compression_vae": True,
           "mini_batch_encoder": 8, "mini_batch_decoder": 2, **overrides}
    return VideoVAE(cfg).eval()


def test_blend_replaces_boundaries_and_keeps_slice_middles():
    vae = tiny()
    z = torch.randn(1, 4, 6, 2, 2)  # slices [0,2) [2,4) [4,6) -> boundaries at frames 8 and 16
    with torch.no_grad():
        plain = vae.decode(z)
        blended = vae.decode(z, seam="blend")
        # the window across the first boundary: latents [1,3), context [0,1) and [3,5)
        shifted = vae._decode_window(z[:, :, 0:5], Window(1, 3, 0, 5, "slice", 4, 12))
    assert torch.equal(blended[:, :, :4], plain[:, :, :4])
    assert torch.equal(blended[:, :, 20:], plain[:, :, 20:])
    assert torch.allclose(blended[:, :, 7:9], shifted[:, :, 3:5], atol=1e-6)  # weight 1 at the boundary
    assert not torch.allclose(blended[:, :, 7:9], plain[:, :, 7:9])
    mid = (plain[:, :, 5] + shifted[:, :, 1]) / 2  # weight 1/2 two frames before the boundary
    assert torch.allclose(blended[:, :, 5], mid, atol=1e-6)
    assert vae.slice_boundaries(6) == [8, 16]
    assert vae.slice_boundaries(7) == [9, 17]  # the lone first frame is not a slice seam


def test_smooth_output_is_seeded_and_clamped():
    vae = tiny()
    z = 3 * torch.randn(1, 4, 6, 2, 2)
    with torch.no_grad():
        a = vae.decode(z, seam="smooth", seed=3)
        b = vae.decode(z, seam="smooth", seed=3)
        c = vae.decode(z, seam="smooth", seed=4)
        plain = vae.decode(z)
        short = vae.decode(z[:, :, :2], seam="smooth")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1
    assert torch.equal(a[:, :, :4], plain[:, :, :4].clamp(-1, 1))  # outside the re-encoded span
    assert not torch.allclose(a[:, :, 4:20], plain[:, :, 4:20].clamp(-1, 1))
    assert torch.equal(short, vae.decode(z[:, :, :2]).clamp(-1, 1))  # one slice: clamp only


def test_progress_counts_every_window_including_seam_passes():
    vae = tiny()
    calls = []
    with torch.no_grad():
        vae.decode(torch.randn(1, 4, 6, 2, 2), progress=lambda d, t, preview=None: calls.append((d, t)))
        assert calls[-1] == (3, 3)
        calls.clear()
        vae.decode(torch.randn(1, 4, 6, 2, 2), seam="blend", progress=lambda d, t, preview=None: calls.append((d, t)))
        assert calls[-1] == (5, 5)
        calls.clear()
        vae.decode(torch.randn(1, 4, 6, 2, 2), seam="smooth", progress=lambda d, t, preview=None: calls.append((d, t)))
    # 3 decode windows + 2 encode slices (16 middle frames) + 2 decode windows
    assert [d for d, _ in calls] == list(range(1, 8)) and calls[-1] == (7, 7)


def test_seam_ratio_sees_jumps():
    t = torch.arange(24.0).view(1, 1, 24, 1, 1)
    smooth = (t / 24).expand(1, 3, 24, 4, 4)
    jumpy = smooth.clone()
    jumpy[:, :, 8:16] += 0.2
    assert seam_ratio(smooth, [8, 16]) == pytest.approx(1.0)
    # boundary steps 1/24 + 0.2 and 0.2 - 1/24 over the inner step 1/24
    assert seam_ratio(jumpy, [8, 16]) == pytest.approx(4.8)


def test_tile_blending_is_exact_for_pointwise_maps():
    x = torch.randn(1, 2, 3, 5, 9)  # a latent grid of 5x9

    def decode_like(t):
        return F.interpolate(t, scale_factor=(1, 8, 8), mode="nearest") * 2

    tiled = run_tiled(decode_like, x, Tiling(32, 16), 1 / 8, 1)
    assert torch.allclose(tiled, decode_like(x), atol=1e-6)
    images = torch.randn(1, 3, 2, 40, 72)
    encoded = run_tiled(lambda t: F.avg_pool3d(t, (1, 8, 8)), images, Tiling(32, 16), 1, 1 / 8)
    assert torch.allclose(encoded, F.avg_pool3d(images, (1, 8, 8)), atol=1e-6)


def test_tile_layout_covers_everything_with_full_tiles():
    assert tile_starts(10, 16, 4) == [0]
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 68 and all(b - a <= 24 for a, b in pairwise(starts))


def test_tiled_vae_runs_and_small_images_skip_tiling():
    vae = tiny()
    video = torch.rand(1, 3, 8, 48, 64) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(video).mean
        vae.tiling = Tiling(64, 16)
        assert torch.equal(vae.encode(video).mean, whole)  # fits in one tile
        vae.tiling = Tiling(32, 16)
        tiled = vae.encode(video).mean
        out = vae.decode(tiled)
    assert tiled.shape == whole.shape and out.shape == video.shape and torch.isfinite(out).all()


def test_bad_tiling():
    with pytest.raises(InputError, match="multiples of 8"):
        Tiling(100, 16)
    with pytest.raises(InputError, match="overlap"):
        Tiling(64, 48)

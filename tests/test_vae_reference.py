"""Numerical agreement with the reference AutoencoderKLMagvit (and its pipelines' chunking and
smooth_output), on a tiny random config saved as a released-style vae/ folder.

Runs only when EASYANIMATE_REF_DIR points at a checkout of aigc-apps/EasyAnimate (v3, 8b77224);
the reference is imported at test time and never part of this repository.
"""

import json
import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from easyanimate_core import load_vae

REF_DIR = os.environ.get("EASYANIMATE_REF_DIR")
pytestmark = pytest.mark.skipif(not REF_DIR, reason="set EASYANIMATE_REF_DIR to an EasyAnimate checkout")

TOL = 1e-4
BLOCKS = {"down_block_types": ["SpatialDownBlock3D"] + ["SpatialTemporalDownBlock3D"] * 3,
          "up_block_types": ["SpatialUpBlock3D"] + ["SpatialTemporalUpBlock3D"] * 3}


@pytest.fixture(scope="module")
def reference():
    sys.path.insert(0, REF_DIR)
    if "pkg_resources" not in sys.modules:  # the reference imports it only to compare versions
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    from easyanimate.models.autoencoder_magvit import AutoencoderKLMagvit
    from easyanimate.pipeline.pipeline_easyanimate import EasyAnimatePipeline
    return AutoencoderKLMagvit, EasyAnimatePipeline


def _build(reference, tmp_path, slice_mode):
    cls, _ = reference
    cfg = {"ch": 16, "ch_mult": [1, 2, 4, 4], "norm_num_groups": 8, "slice_compression_vae": slice_mode,
           "mini_batch_encoder": 8 if slice_mode else 9, "mini_batch_decoder": 2 if slice_mode else 3, **BLOCKS}
    torch.manual_seed(0)
    ref = cls(**cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path / "vae"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(cfg))
    return ref, load_vae(tmp_path)


def _chunked(fn, x, size):
    return torch.cat([fn(x[:, :, i:i + size]) for i in range(0, x.shape[2], size)], dim=2)


@pytest.mark.parametrize("slice_mode, frame_counts", [(True, (1, 8, 17)), (False, (9, 18))])
def test_encode_decode_match_reference(reference, tmp_path, slice_mode, frame_counts):
    ref, ours = _build(reference, tmp_path, slice_mode)
    with torch.no_grad():
        for frames in frame_counts:
            video = torch.rand(1, 3, frames, 16, 24) * 2 - 1
            if slice_mode:  # v3 pipelines run the VAE on the whole clip; v2 pipelines chunk it
                mean = ref.encode(video).latent_dist.mean
            else:
                mean = _chunked(lambda x: ref.encode(x).latent_dist.mean, video, 9)
            assert (ours.encode(video).mean - mean).abs().max() <= TOL
            z = torch.randn_like(mean)
            decoded = ref.decode(z).sample if slice_mode else _chunked(lambda x: ref.decode(x).sample, z, 3)
            assert (ours.decode(z) - decoded).abs().max() <= TOL


@pytest.mark.parametrize("slice_mode", [True, False])
def test_smooth_output_matches_reference_pipeline(reference, tmp_path, slice_mode):
    ref, ours = _build(reference, tmp_path, slice_mode)
    _, pipeline = reference
    z = torch.randn(1, 4, 6, 2, 3)
    with torch.no_grad():
        video = (ref.decode(z).sample if slice_mode else _chunked(lambda x: ref.decode(x).sample, z, 3)).clamp(-1, 1)
        torch.manual_seed(11)  # the reference samples with the global RNG
        expected = pipeline.smooth_output(types.SimpleNamespace(vae=ref), video, ref.mini_batch_encoder,
                                          ref.mini_batch_decoder).clamp(-1, 1)
        assert (ours.decode(z, seam="smooth", seed=11) - expected).abs().max() <= TOL

"""Our video DiT against diffusers' PixArtTransformer2DModel (an independent implementation of the
image backbone): with motion modules and U-ViT skips at their zero init, every frame of our
output must equal PixArt run on that frame alone."""

import diffusers  # the test extra installs it: a missing diffusers must fail here, not skip
import pytest
import torch
from tiny_dit import GRID, HYBRID, tiny_pixart

from easyanimate_core.models.transformer import VideoTransformer

BASE = tiny_pixart(num_layers=4)


def _pixart():
    model = diffusers.PixArtTransformer2DModel(**BASE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # non-trivial biases and tables
    return model


def _per_frame(ref, x, t, enc, mask):
    frames = [ref(x[:, :, f], encoder_hidden_states=enc, timestep=t, encoder_attention_mask=mask,
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample for f in range(x.shape[2])]
    return torch.stack(frames, dim=2)


@pytest.mark.parametrize("extra", [HYBRID, GRID, {}], ids=["v3-hybrid+uvit", "v1-grid", "image"])
def test_fresh_video_model_equals_pixart_per_frame(extra):
    ref = _pixart()
    ours = VideoTransformer.from_config({**BASE, **extra}).eval()
    result = ours.load_state_dict(ref.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(any(p in k for p in ("attn_temporal.", "long_connect_fc.")) for k in result.missing_keys)
    x = torch.randn(2, 4, 3, 8, 12)  # non-square latent: the PE is recomputed for 4 x 6 tokens
    t = torch.tensor([10, 700])
    enc = torch.randn(2, 7, 32)
    mask = torch.ones(2, 7)
    mask[1, 4:] = 0
    with torch.no_grad():
        ours_out = ours(hidden_states=x, timestep=t, encoder_hidden_states=enc, encoder_attention_mask=mask)
        ref_out = _per_frame(ref, x, t, enc, mask)
    assert ours_out.shape == (2, 8, 3, 8, 12)
    assert (ours_out - ref_out).abs().max().item() <= 1e-5


def test_trained_motion_module_changes_frames_jointly():
    """Control for the test above: once proj_out is non-zero the video model is no longer per-frame PixArt."""
    ref = _pixart()
    ours = VideoTransformer.from_config({**BASE, **HYBRID}).eval()
    ours.load_state_dict(ref.state_dict(), strict=False)
    with torch.no_grad():
        ours.transformer_blocks[1].attn_temporal.temporal_transformer.proj_out.weight.normal_(0, 0.1)
    x, t, enc = torch.randn(1, 4, 3, 8, 8), torch.tensor([500]), torch.randn(1, 5, 32)
    with torch.no_grad():
        diff = (ours(x, t, enc) - _per_frame(ref, x, t, enc, None)).abs().max().item()
    assert diff > 1e-3


def test_multiscale_model_resolution_and_aspect_embeddings():
    """sample_size 128 (PixArt's 1024 multi-scale layout) adds resolution / aspect-ratio embeddings;
    without added_cond_kwargs we derive them from the latent size (x8 pixels)."""
    config = {**BASE, "num_attention_heads": 3, "sample_size": 128, "cross_attention_dim": 96}
    ref = diffusers.PixArtTransformer2DModel(**config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = VideoTransformer.from_config(config).eval()
    ours.load_state_dict(ref.state_dict())
    x, t, enc = torch.randn(2, 4, 1, 8, 12), torch.tensor([10, 700]), torch.randn(2, 7, 32)
    cond = {"resolution": torch.tensor([[64.0, 96.0]] * 2), "aspect_ratio": torch.tensor([[8 / 12]] * 2)}
    with torch.no_grad():
        expected = ref(x[:, :, 0], encoder_hidden_states=enc, timestep=t, added_cond_kwargs=cond).sample
        assert (ours(x, t, enc, added_cond_kwargs=cond)[:, :, 0] - expected).abs().max() <= 1e-5
        assert (ours(x, t, enc)[:, :, 0] - expected).abs().max() <= 1e-5
        other = {"resolution": torch.tensor([[512.0, 512.0]] * 2), "aspect_ratio": torch.tensor([[1.0]] * 2)}
        assert (ours(x, t, enc, added_cond_kwargs=other)[:, :, 0] - expected).abs().max() > 1e-4

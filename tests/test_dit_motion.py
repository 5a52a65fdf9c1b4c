"""Motion-module attention neighbourhoods against a slow explicit implementation written here
(per-group loops, own PE formula), gradient-dependency probes, and error paths."""

import math

import pytest
import torch
from tiny_dit import GRID, tiny_pixart

from easyanimate_core import InputError
from easyanimate_core.models.motion_module import (
    MotionAttention,
    MotionModule,
    load_motion_module,
    motion_options,
)
from easyanimate_core.models.transformer import VideoTransformer


def _pe(frames, dim):
    pe = torch.zeros(frames, dim)
    for f in range(frames):
        for i in range(0, dim, 2):
            angle = f / (10000 ** (i / dim))
            pe[f, i], pe[f, i + 1] = math.sin(angle), math.cos(angle)
    return pe


def _groups(mode, b, frames, h, w, n):
    if mode == "global":
        return [[(b, f, p) for f in range(frames) for p in range(h * w)]]
    if mode == "temporal":
        return [[(b, f, p) for f in range(frames)] for p in range(h * w)]
    return [[(b, f, (i * n + a) * w + j * n + c) for f in range(frames) for a in range(n) for c in range(n)]
            for i in range(h // n) for j in range(w // n)]


def _slow_attention(attn, x, batch, frames, h, w, mode, n=1):
    """x: (B*F, h*w, C). Each group of tokens attends within itself, explicit softmax."""
    c = x.shape[-1]
    pe = _pe(frames, c)
    out = torch.zeros_like(x)
    heads, d = attn.heads, attn.head_dim
    for b in range(batch):
        for group in _groups(mode, b, frames, h, w, n):
            seq = torch.stack([x[b * frames + f, p] + pe[f] for b, f, p in group])
            q = (seq @ attn.to_q.weight.T).view(len(group), heads, d)
            k = (seq @ attn.to_k.weight.T).view(len(group), heads, d)
            v = (seq @ attn.to_v.weight.T).view(len(group), heads, d)
            scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
            y = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v).reshape(len(group), heads * d)
            y = y @ attn.to_out[0].weight.T + attn.to_out[0].bias
            for (b_, f, p), row in zip(group, y):
                out[b_ * frames + f, p] = row
    return out


def _attention(mode, heads=2, dim=32, n=2):
    grid = mode == "grid"
    attn = MotionAttention(dim, heads, dim // heads, "Global" if mode == "global" else "Temporal", grid, n,
                           use_pe=True, max_len=4096, pe_in_photo=True)
    with torch.no_grad():
        attn.to_out[0].bias.normal_()
    return attn


@pytest.mark.parametrize("mode", ["temporal", "grid", "global"])
def test_motion_attention_equals_slow_explicit_version(mode):
    batch, frames, h, w = 2, 3, 4, 6
    attn = _attention(mode)
    x = torch.randn(batch * frames, h * w, 32)
    with torch.no_grad():
        fast = attn(x, frames, h, w)
        slow = _slow_attention(attn, x, batch, frames, h, w, mode, n=2)
    assert (fast - slow).abs().max().item() < 1e-5


def _dependency(mode, frames=3, h=4, w=4, target=(1, 1, 2)):
    """Which input tokens the output token (frame, row, col) depends on (gradient probe)."""
    attn = _attention(mode)
    x = torch.randn(frames, h * w, 32, requires_grad=True)
    f, r, c = target
    attn(x, frames, h, w)[f, r * w + c].sum().backward()
    return (x.grad.abs().sum(-1) > 0).view(frames, h, w)


def test_grid_neighbourhood_is_the_aligned_2x2_cell_in_every_frame():
    dep = _dependency("grid", target=(1, 1, 2))
    expected = torch.zeros(3, 4, 4, dtype=torch.bool)
    expected[:, 0:2, 2:4] = True
    assert torch.equal(dep, expected)


def test_temporal_neighbourhood_is_the_same_position_in_every_frame():
    dep = _dependency("temporal", target=(0, 2, 1))
    expected = torch.zeros(3, 4, 4, dtype=torch.bool)
    expected[:, 2, 1] = True
    assert torch.equal(dep, expected)


def test_global_neighbourhood_is_the_whole_video():
    assert bool(_dependency("global", target=(2, 3, 3)).all())


def test_single_frame_temporal_attention_is_value_projection():
    attn = _attention("temporal")
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        assert (attn(x, 1, 3, 4) - _slow_attention(attn, x, 2, 1, 3, 4, "temporal")).abs().max() < 1e-5


def test_module_is_identity_at_init_and_motion_scale_scales_its_contribution():
    opts = motion_options({"num_attention_heads": 2, "num_transformer_block": 1, "temporal_position_encoding": True,
                           "attention_block_types": ["Temporal_Self", "Global_Self"]}, "Vanilla")
    module = MotionModule(64, opts)
    x = torch.randn(6, 16, 64)
    with torch.no_grad():
        assert torch.equal(module(x, 3, 4, 4), x)
        module.temporal_transformer.proj_out.weight.normal_()
        full = module(x, 3, 4, 4) - x
        module.motion_scale = 0.5
        assert torch.allclose(module(x, 3, 4, 4) - x, 0.5 * full, atol=1e-5)
        module.motion_scale = 0.0
        assert torch.equal(module(x, 3, 4, 4), x)


def test_pe_in_photo_switch_only_affects_single_frames():
    attn = MotionAttention(32, 2, 16, "Temporal", True, 2, True, 4096, pe_in_photo=False)
    with_pe = MotionAttention(32, 2, 16, "Temporal", True, 2, True, 4096, pe_in_photo=True)
    with_pe.load_state_dict(attn.state_dict())
    x = torch.randn(1, 16, 32)
    with torch.no_grad():
        # frame 0's PE is (0, 1, 0, 1, ...): skipping it must change a single-frame output
        assert not torch.allclose(attn(x, 1, 4, 4), with_pe(x, 1, 4, 4))
        x3 = torch.randn(3, 16, 32)
        assert torch.equal(attn(x3, 3, 4, 4), with_pe(x3, 3, 4, 4))


def test_errors():
    attn = MotionAttention(32, 2, 16, "Temporal", True, 2, True, max_len=4, pe_in_photo=True)
    with pytest.raises(InputError, match="at most 4 latent frames"):
        attn(torch.randn(5, 16, 32), 5, 4, 4)
    with pytest.raises(InputError, match="divisible by block_size 2"):
        attn(torch.randn(2, 15, 32), 2, 3, 5)
    with pytest.raises(InputError, match="not supported"):
        motion_options({"attention_block_types": ["Temporal_Cross"]}, "Vanilla")
    with pytest.raises(InputError, match="unknown keys"):
        motion_options({"num_heads": 8}, "Vanilla")
    with pytest.raises(InputError, match="motion_module_type"):
        motion_options({}, "Sparse")
    with pytest.raises(InputError, match="multiple of 32"):
        MotionModule(48, motion_options({}, "Vanilla"))



def test_standalone_motion_module_errors():
    model = VideoTransformer.from_config(tiny_pixart(**GRID))
    state = {k: v for k, v in model.state_dict().items() if ".attn_temporal." in k}
    with pytest.raises(InputError, match="unknown motion-module preset 'v9'"):
        load_motion_module(state, preset="v9")
    # the file has one transformer block per motion module, the config asks for two
    with pytest.raises(InputError, match="does not fit its config"):
        load_motion_module(state, config={"motion_module_kwargs": {"num_attention_heads": 2,
                                                                   "num_transformer_block": 2}}).build()

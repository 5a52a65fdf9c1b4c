"""Numerical agreement with the reference implementation (aigc-apps/EasyAnimate), when a checkout
is available: EASYANIMATE_REF_DIR=/path/to/EasyAnimate (skipped otherwise; the reference is never
part of this repo). The reference's Transformer3DModel is built at a tiny width with the v1 / v2 /
v3 additional kwargs and random weights (zero-initialised layers made non-zero), saved in the
released folder layout (pos_encoder.pe buffers included), loaded with load_transformer, and both
are run on the same inputs: max |difference| <= 1e-4 in fp32 on CPU."""

import json
import os
import sys
import types

import pytest
import torch
from tiny_dit import tiny_pixart

from easyanimate_core import load_transformer
from easyanimate_core.checkpoints import save_state_dict

REF_DIR = os.environ.get("EASYANIMATE_REF_DIR")
pytestmark = pytest.mark.skipif(not REF_DIR, reason="set EASYANIMATE_REF_DIR to an EasyAnimate checkout")

BASE = tiny_pixart(num_layers=28)


def _motion(heads, types_, block_size, **extra):
    return dict(num_attention_heads=heads, num_transformer_block=1, attention_block_types=types_,
                temporal_position_encoding=True, temporal_position_encoding_max_len=4096,
                temporal_attention_dim_div=1, block_size=block_size, **extra)


EXTRA = {
    # The reference hard-codes its U-ViT constants for 28 blocks, hence 28 tiny blocks for v2/v3.
    "v1": {"basic_block_type": "motionmodule", "motion_module_type": "VanillaGrid", "num_layers": 4,
               "motion_module_kwargs": _motion(4, ["Temporal_Self", "Temporal_Self"], 2)},
    "v2": {"basic_block_type": "motionmodule", "motion_module_type": "Vanilla", "enable_uvit": True,
               "motion_module_kwargs": _motion(4, ["Temporal_Self", "Temporal_Self"], 1)},
    "v3": {"basic_block_type": "global_motionmodule", "motion_module_type": "Vanilla", "enable_uvit": True, "in_channels": 12,
               "motion_module_kwargs_even": _motion(2, ["Temporal_Self", "Temporal_Self"], 1,
                                                 remove_time_embedding_in_photo=False),
               "motion_module_kwargs_odd": _motion(2, ["Temporal_Self", "Global_Self"], 1,
                                                remove_time_embedding_in_photo=False)},
}


@pytest.fixture(scope="module")
def reference_class():
    if "pkg_resources" not in sys.modules:  # the reference imports it only for parse_version
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    sys.path.insert(0, REF_DIR)
    try:
        from easyanimate.models.transformer3d import Transformer3DModel
    finally:
        sys.path.remove(REF_DIR)
    return Transformer3DModel


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_released_layout_reproduces_the_reference(version, reference_class, tmp_path):
    config = {**BASE, **EXTRA[version]}
    base = {k: v for k, v in config.items() if k in BASE}
    extra = {k: v for k, v in config.items() if k not in BASE}
    ref = reference_class.from_config(base, **extra).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if not p.any():
                p.normal_(0, 0.05)  # motion proj_out, skips, CLIP linear_2, zero biases
            elif p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path / "transformer"
    folder.mkdir()
    save_state_dict(folder / "diffusion_pytorch_model.safetensors", dict(ref.state_dict()))
    (folder / "config.json").write_text(json.dumps(dict(ref.config), default=list))
    ours = load_transformer(tmp_path).eval()

    g = torch.Generator().manual_seed(1)
    b, frames = 2, 5
    x = torch.randn(b, 4, frames, 8, 12, generator=g)
    t = torch.tensor([3, 777])
    enc = torch.randn(b, 9, 32, generator=g)
    mask = torch.ones(b, 9)
    mask[1, 5:] = 0
    kw = {}
    if version == "v3":
        kw = {"inpaint_latents": torch.randn(b, 8, frames, 8, 12, generator=g),
                  "clip_encoder_hidden_states": torch.randn(b, 768, generator=g),
                  "clip_attention_mask": torch.tensor([[1.0] * 8, [0.0] * 8])}
    with torch.no_grad():
        expected = ref(x, encoder_hidden_states=enc, timestep=t, encoder_attention_mask=mask, return_dict=False,
                       added_cond_kwargs={"resolution": None, "aspect_ratio": None}, **kw)[0]
        result = ours(x, t, enc, mask, **kw)
    diff = (result - expected).abs().max().item()
    print(f"{version}: max |ours - reference| = {diff:.2e} (|reference| max {expected.abs().max().item():.2f})")
    assert diff <= 1e-4

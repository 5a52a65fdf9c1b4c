"""Real released configurations built on the meta device: our key names, order and shapes equal
the manifests of the published checkpoints, and the parameter counts equal their summaries."""

import json
from pathlib import Path

import pytest
import torch

from easyanimate_core.models.motion_module import MotionModuleSet
from easyanimate_core.models.transformer import VideoTransformer

# Key/shape listings of the released checkpoints, shipped with the tests (no weights in them).
MANIFESTS = Path(__file__).resolve().parent / "fixtures" / "manifests"


def _manifest(name):
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def _config(manifest):
    parts = list(manifest["config"].values())
    config = dict(parts[0])
    for extra in parts[1:]:
        config.update(extra)
    return config


def _meta_model(config):
    with torch.device("meta"):
        return VideoTransformer.from_config(config)


@pytest.mark.parametrize("name", ["pixart_xl_2_512_transformer", "easyanimate_v1_transformer",
                                  "easyanimate_v2_transformer", "easyanimate_v3_inp_transformer"])
def test_released_transformer_layout(name):
    manifest = _manifest(name)
    model = _meta_model(_config(manifest))
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    params = [(t["name"], t["shape"]) for t in manifest["tensors"] if t["kind"] == "parameter"]
    buffers = [t["name"] for t in manifest["tensors"] if t["kind"] == "buffer"]
    assert ours == params  # same names, same order, same shapes
    # The only buffers in released files are the fixed frame PE tables, which we regenerate.
    assert all(b.endswith(".pos_encoder.pe") for b in buffers)
    count = sum(p.numel() for p in model.parameters())
    print(f"{name}: {count:,} parameters ({len(ours)} tensors); manifest {manifest['summary']['num_parameters']:,}")
    assert count == manifest["summary"]["num_parameters"]


def test_released_standalone_motion_module_layout():
    manifest = _manifest("easyanimate_v1_motion_module")
    state = {t["name"]: torch.empty(t["shape"], device="meta") for t in manifest["tensors"]}
    state = {k: v for k, v in state.items() if not k.endswith("pos_encoder.pe")}
    motion = MotionModuleSet(state, {k: v for k, v in _config(manifest).items() if k.startswith(("motion", "basic"))},
                             "v1", "easyanimate_v1_mm")
    modules = motion.build()
    assert (motion.hidden_size, motion.depth) == (1152, 28)
    count = sum(p.numel() for p in modules.parameters())
    print(f"easyanimate_v1_mm: {count:,} parameters; manifest {manifest['summary']['num_parameters']:,}")
    assert count == manifest["summary"]["num_parameters"]
    # Its keys are exactly the motion-module keys of the v1 transformer.
    v1 = _meta_model(_config(_manifest("easyanimate_v1_transformer")))
    assert sorted(state) == sorted(k for k in v1.state_dict() if ".attn_temporal." in k)


def test_release_structure_facts():
    v3 = _meta_model(_config(_manifest("easyanimate_v3_inp_transformer")))
    assert v3.options["uvit_skips"] == 13
    modes = [tuple(a.mode for a in b.attn_temporal.temporal_transformer.transformer_blocks[0].attention_blocks)
             for b in v3.transformer_blocks]
    assert modes[0::2] == [("Temporal", "Temporal")] * 14 and modes[1::2] == [("Temporal", "Global")] * 14
    assert v3.transformer_blocks[0].attn_temporal.temporal_transformer.transformer_blocks[0].attention_blocks[0].heads == 16
    v1 = _meta_model(_config(_manifest("easyanimate_v1_transformer")))
    first = v1.transformer_blocks[0].attn_temporal.temporal_transformer.transformer_blocks[0].attention_blocks[0]
    assert (first.heads, first.grid, first.block_size, first.max_len) == (8, True, 2, 4096)


@pytest.mark.parametrize("version,name", [("v1", "easyanimate_v1_transformer"), ("v2", "easyanimate_v2_transformer"),
                                          ("v3", "easyanimate_v3_inp_transformer")])
def test_presets_carry_the_config_only_facts(version, name):
    """Heads, grid/temporal/global attention types and block size are invisible in weights: the
    presets used for files without config.json must build exactly the released model."""
    from easyanimate_core.checkpoints import TRANSFORMER_PRESETS

    assert _meta_model(TRANSFORMER_PRESETS[version]).options == _meta_model(_config(_manifest(name))).options

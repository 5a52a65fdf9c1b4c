"""DiT nodes with ComfyUI absent: load a DiT / PixArt base / standalone motion module / LoRAs from
the models folder, patches applied only inside ModelHandle.patched(), graph branches isolated,
exact restore, and clear errors for incompatible pairs."""

import json

import pytest
import torch
from tiny_dit import tiny_pixart

from easyanimate_core import CheckpointError, InputError
from easyanimate_core.checkpoints import LoraPair, lora_state_dict, save_state_dict
from easyanimate_core.models.handle import ModelHandle
from easyanimate_core.models.lora import linear_layers
from easyanimate_core.models.transformer import VideoTransformer

BASE = tiny_pixart(sample_size=64)
V1 = {"basic_block_type": "motionmodule", "motion_module_type": "VanillaGrid",
          "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1, "block_size": 2,
                                    "temporal_position_encoding": True, "temporal_position_encoding_max_len": 4096,
                                    "temporal_attention_dim_div": 1,
                                    "attention_block_types": ["Temporal_Self", "Temporal_Self"]}}
MOTION_Q = "transformer_blocks.{}.attn_temporal.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q"


@pytest.fixture
def nodes(pack):
    return pack.nodes.dit_nodes


def _random(config):
    model = VideoTransformer.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _lora(layers, names, rank=2):
    return {n: LoraPair(torch.randn(rank, layers[n].in_features) * 0.2, torch.randn(layers[n].out_features, rank) * 0.2,
                        1.0) for n in names}


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    torch.manual_seed(0)
    video = _random({**BASE, **V1})
    state = video.state_dict()
    folder = tmp_path / "tiny-v1" / "transformer"
    folder.mkdir(parents=True)
    save_state_dict(folder / "diffusion_pytorch_model.safetensors", state)
    (folder / "config.json").write_text(json.dumps({**BASE, **V1}))
    base_folder = tmp_path / "tiny-pixart"
    base_folder.mkdir()
    save_state_dict(base_folder / "diffusion_pytorch_model.safetensors", {k: v for k, v in state.items() if "temporal" not in k})
    (base_folder / "config.json").write_text(json.dumps(BASE))
    save_state_dict(tmp_path / "tiny_mm.safetensors", {k: v for k, v in state.items() if "temporal" in k})
    layers = linear_layers(video)
    loras = tmp_path / "loras"
    loras.mkdir()
    save_state_dict(loras / "style.safetensors",
                    lora_state_dict(_lora(layers, ["transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2"]), "kohya"))
    save_state_dict(loras / "zoom.safetensors", lora_state_dict(_lora(layers, [MOTION_Q.format(0), MOTION_Q.format(1)]),
                                                                "motion_lora"))
    save_state_dict(loras / "adapter.safetensors",
                    lora_state_dict(_lora(layers, ["transformer_blocks.0.attn1.to_v", "transformer_blocks.1.attn2.to_out.0"]),
                                    "motion_lora"))
    other = _random({**BASE, **V1, "num_attention_heads": 4})  # hidden size 128
    save_state_dict(tmp_path / "wide_mm.safetensors", {k: v for k, v in other.state_dict().items() if "temporal" in k})
    monkeypatch.setenv("VDIT_MODELS_DIR", f"{tmp_path}:{loras}")
    return {"video": video, "root": tmp_path}


def _run(model):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        return model(torch.randn(1, 4, 3, 8, 8, generator=g), torch.tensor([600]), torch.randn(1, 5, 32, generator=g))


def _sample(handle):
    with handle.patched() as model:
        return _run(model)


def test_node_definitions(nodes, models_dir):
    for node_id, node in nodes.NODE_CLASS_MAPPINGS.items():
        spec = node.INPUT_TYPES()
        for section in spec.values():
            assert all(options[1].get("tooltip") for options in section.values()), node_id
        assert node.DESCRIPTION and node.CATEGORY.startswith("VideoDiT/") and node_id in nodes.NODE_DISPLAY_NAME_MAPPINGS
    names = nodes.VDiT_LoadDiT.INPUT_TYPES()["required"]["dit_name"][0]
    assert names == ["tiny-pixart", "tiny-v1/transformer"]  # motion modules and LoRAs go to their own loaders
    assert "zoom.safetensors" in nodes.VDiT_LoadLoRA.INPUT_TYPES()["required"]["lora_name"][0]
    assert nodes.VDiT_LoadDiT.RETURN_TYPES == ("VDIT_MODEL",)
    assert nodes.VDiT_LoadMotionModule.RETURN_TYPES == ("VDIT_MOTION",)
    assert nodes.VDiT_LoadMotionLoRA.RETURN_TYPES == ("VDIT_MOTION_LORA",)


def test_base_plus_motion_module_and_isolated_branches(nodes, models_dir):
    video = models_dir["video"]
    (base,) = nodes.VDiT_LoadDiT().load("tiny-pixart", "fp32", "auto")
    assert isinstance(base, ModelHandle) and not base.model.has_motion_modules
    (motion,) = nodes.VDiT_LoadMotionModule().load("tiny_mm.safetensors", "v1")
    (animated,) = nodes.VDiT_ApplyMotionModule().apply(base, motion, motion_scale=1.0)
    assert (_sample(animated) - _run(video)).abs().max() < 1e-5
    # The input handle and its module are untouched: no motion modules outside patched().
    assert base.motion is None and not base.model.has_motion_modules
    assert (_sample(base) - _sample(animated)).abs().max() > 1e-3
    (styled,) = nodes.VDiT_LoadLoRA().apply(animated, "style.safetensors", 0.7)
    plain = _sample(animated)
    assert (_sample(styled) - plain).abs().max() > 1e-4
    assert torch.allclose(_sample(animated), plain, atol=1e-5)  # the other branch never sees the LoRA
    (still,) = nodes.VDiT_ApplyMotionModule().apply(base, motion, motion_scale=0.0)
    assert torch.allclose(_sample(still), _sample(base), atol=1e-5)


def test_patched_restores_the_module_exactly(nodes, models_dir):
    (handle,) = nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "fp32", "auto")
    snapshot = {k: (v.clone(), v.data_ptr()) for k, v in handle.model.state_dict().items()}
    (zoom,) = nodes.VDiT_LoadMotionLoRA().load("zoom.safetensors", 1.0)
    (motion,) = nodes.VDiT_LoadMotionModule().load("tiny-v1/transformer", "v1")
    (patched,) = nodes.VDiT_ApplyMotionModule().apply(handle, motion, 0.8, motion_lora=zoom)
    (patched,) = nodes.VDiT_LoadLoRA().apply(patched, "style.safetensors", 0.5)
    (patched,) = nodes.VDiT_LoadDomainAdapter().apply(patched, "adapter.safetensors", 0.6)
    _sample(patched)
    with pytest.raises(RuntimeError), patched.patched():
        raise RuntimeError("sampling failed")  # restore happens on errors too
    for key, tensor in handle.model.state_dict().items():
        assert torch.equal(tensor, snapshot[key][0]) and tensor.data_ptr() == snapshot[key][1], key
    assert all(b.attn_temporal.motion_scale == 1.0 for b in handle.model.transformer_blocks)


def test_motion_lora_chain_adds_up(nodes, models_dir):
    (handle,) = nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "fp32", "auto")
    (motion,) = nodes.VDiT_LoadMotionModule().load("tiny_mm.safetensors", "v1")
    (one,) = nodes.VDiT_LoadMotionLoRA().load("zoom.safetensors", 0.5)
    (two,) = nodes.VDiT_LoadMotionLoRA().load("zoom.safetensors", 0.5, prev_motion_lora=one)
    (full,) = nodes.VDiT_LoadMotionLoRA().load("zoom.safetensors", 1.0)
    (a,) = nodes.VDiT_ApplyMotionModule().apply(handle, motion, 1.0, motion_lora=two)
    (b,) = nodes.VDiT_ApplyMotionModule().apply(handle, motion, 1.0, motion_lora=full)
    (c,) = nodes.VDiT_ApplyMotionModule().apply(handle, motion, 1.0)
    assert (_sample(a) - _sample(b)).abs().max() < 1e-5
    assert (_sample(a) - _sample(c)).abs().max() > 1e-4


def test_domain_adapter_scale_zero_is_the_same_model(nodes, models_dir):
    (handle,) = nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "fp32", "auto")
    (same,) = nodes.VDiT_LoadDomainAdapter().apply(handle, "adapter.safetensors", 0.0)
    assert same is handle


def test_weight_dtypes(nodes, models_dir):
    (fp8,) = nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "fp8_e4m3fn", "auto")
    assert fp8.model.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    (fp32,) = nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "default", "auto")  # CPU: fp32
    rel = (_sample(fp8).float() - _sample(fp32)).norm() / _sample(fp32).norm()
    assert rel < 0.2
    with pytest.raises(InputError, match="weight_dtype"):
        nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "int4", "auto")
    with pytest.raises(InputError, match="config_preset"):
        nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "default", "v9")


def test_fp8_base_takes_a_motion_module_in_the_compute_dtype(nodes, models_dir):
    (base,) = nodes.VDiT_LoadDiT().load("tiny-pixart", "fp8_e4m3fn", "auto")  # CPU: computes in fp32
    (motion,) = nodes.VDiT_LoadMotionModule().load("tiny_mm.safetensors", "v1")
    (zoom,) = nodes.VDiT_LoadMotionLoRA().load("zoom.safetensors", 1.0)
    (animated,) = nodes.VDiT_ApplyMotionModule().apply(base, motion, 1.0, zoom)
    with animated.patched() as model:
        module = model.transformer_blocks[0].attn_temporal
        assert module.temporal_transformer.proj_in.weight.dtype == model.dtype == torch.float32
        out = _run(model)
    (full,) = nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "fp32", "auto")
    (reference,) = nodes.VDiT_ApplyMotionModule().apply(full, motion, 1.0, zoom)
    expected = _sample(reference)
    assert ((out - expected).norm() / expected.norm()).item() < 0.2


def test_incompatible_pairs_are_clear_errors(nodes, models_dir):
    (base,) = nodes.VDiT_LoadDiT().load("tiny-pixart", "fp32", "auto")
    (wide,) = nodes.VDiT_LoadMotionModule().load("wide_mm.safetensors", "v1")
    with pytest.raises(InputError, match="hidden size 128"):
        nodes.VDiT_ApplyMotionModule().apply(base, wide, 1.0)
    with pytest.raises(InputError, match="no motion modules; apply a motion module first"):
        nodes.VDiT_LoadLoRA().apply(base, "zoom.safetensors", 1.0)
    (video,) = nodes.VDiT_LoadDiT().load("tiny-v1/transformer", "fp32", "auto")
    with pytest.raises(CheckpointError, match="not image attention"):
        nodes.VDiT_LoadDomainAdapter().apply(video, "zoom.safetensors", 1.0)
    with pytest.raises(InputError, match="VDIT_MODEL"):
        nodes.VDiT_LoadLoRA().apply(torch.nn.Linear(2, 2), "style.safetensors", 1.0)
    with pytest.raises(InputError, match="the motion_module input is a dict"):
        nodes.VDiT_ApplyMotionModule().apply(base, {}, 1.0)
    with pytest.raises(CheckpointError, match="not found"):
        nodes.VDiT_LoadLoRA().apply(base, "missing.safetensors", 1.0)


# The default model's layout: width 96 = 3 heads x 32, one attention in even motion modules and
# temporal + global in odd ones. No preset describes it.
THREE_HEADS = {**tiny_pixart(num_attention_heads=3, cross_attention_dim=96),
               "basic_block_type": "global_motionmodule", "motion_module_type": "Vanilla",
               "motion_module_kwargs_even": {"num_attention_heads": 3, "num_transformer_block": 1,
                                             "attention_block_types": ["Temporal_Self"],
                                             "temporal_position_encoding": True},
               "motion_module_kwargs_odd": {"num_attention_heads": 3, "num_transformer_block": 1,
                                            "attention_block_types": ["Temporal_Self", "Global_Self"],
                                            "temporal_position_encoding": True}}


def test_motion_module_auto_reads_the_config_stored_with_the_weights(nodes, models_dir, caplog):
    root = models_dir["root"]
    model = _random(THREE_HEADS)
    folder = root / "three" / "transformer"
    folder.mkdir(parents=True)
    save_state_dict(folder / "diffusion_pytorch_model.safetensors", model.state_dict())
    (folder / "config.json").write_text(json.dumps(model.config))
    motion_state = {k: v for k, v in model.state_dict().items() if ".attn_temporal." in k}
    save_state_dict(root / "three_mm.safetensors", motion_state, metadata={"config": json.dumps(model.config)})
    save_state_dict(root / "three_bare.safetensors", motion_state)
    (handle,) = nodes.VDiT_LoadDiT().load("three/transformer", "fp32", "auto")
    own = _sample(handle)
    assert nodes.VDiT_LoadMotionModule.INPUT_TYPES()["required"]["config_preset"][0][-1] == "auto"

    for name in ("three/transformer", "three_mm.safetensors"):  # config.json in the folder / metadata
        (motion,) = nodes.VDiT_LoadMotionModule().load(name, "auto")
        assert motion.config["motion_module_kwargs_odd"]["num_attention_heads"] == 3 and motion.preset == "v3"
        (applied,) = nodes.VDiT_ApplyMotionModule().apply(handle, motion)
        torch.testing.assert_close(_sample(applied), own)
    # a preset only fills in what the file does not declare: the stored config wins (saved "v1" workflows too)
    for preset in ("v1", "v3"):
        (chosen,) = nodes.VDiT_LoadMotionModule().load("three_mm.safetensors", preset)
        assert chosen.config["motion_module_kwargs_odd"]["num_attention_heads"] == 3 and chosen.preset == "v3"
    (bare_v3,) = nodes.VDiT_LoadMotionModule().load("three_bare.safetensors", "v3")
    with pytest.raises(InputError, match="does not fit its config"):
        nodes.VDiT_ApplyMotionModule().apply(handle, bare_v3)

    # nothing stored: a logged guess from the weights (96 is no multiple of 64: one head)
    with caplog.at_level("WARNING"):
        (guess,) = nodes.VDiT_LoadMotionModule().load("three_bare.safetensors", "auto")
    assert "guessed temporal attention, heads: 1" in caplog.text
    assert [len(guess.options(i)["modes"]) for i in (0, 1)] == [1, 2]
    (guessed,) = nodes.VDiT_ApplyMotionModule().apply(handle, guess)
    assert torch.isfinite(_sample(guessed)).all()
    (wide,) = nodes.VDiT_LoadMotionModule().load("wide_mm.safetensors", "auto")  # width 128: 64-wide heads
    assert wide.options(0)["num_attention_heads"] == 2 and wide.preset == "v2"
    with pytest.raises(InputError, match="config_preset 'v4'"):
        nodes.VDiT_LoadMotionModule().load("three_mm.safetensors", "v4")


def test_motion_module_auto_takes_the_standalone_release_at_the_released_width():
    from easyanimate_core.checkpoints import TRANSFORMER_PRESETS
    from easyanimate_core.models.motion_module import load_motion_module

    config = {**tiny_pixart(num_attention_heads=16, attention_head_dim=72, cross_attention_dim=1152, num_layers=1),
              **TRANSFORMER_PRESETS["v1"]}
    config["num_layers"] = 1
    with torch.device("meta"):
        state = {k: v for k, v in VideoTransformer.from_config(config).state_dict().items() if ".attn_temporal." in k}
    motion = load_motion_module(state, preset="auto")  # easyanimate_v1_mm is the only standalone release
    assert motion.preset == "v1" and motion.hidden_size == 1152
    assert motion.config["motion_module_kwargs"] == TRANSFORMER_PRESETS["v1"]["motion_module_kwargs"]

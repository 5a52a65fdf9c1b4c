"""The LoRA family on a tiny DiT: kohya (EasyAnimate), PEFT, MotionLoRA and domain adapter files,
strengths and scales checked against an explicit merge written here, stacking, exact removal,
runtime adapters (fp8), trainable LoRA create/save/reload, and the error paths."""

import json

import pytest
import torch
from tiny_dit import tiny_pixart

from easyanimate_core import CheckpointError, InputError
from easyanimate_core.checkpoints import LoraPair, lora_state_dict, save_state_dict
from easyanimate_core.models.lora import (
    add_trainable_lora,
    apply_loras,
    linear_layers,
    load_lora,
    loras_applied,
    remove_trainable_lora,
    trainable_lora_state_dict,
)
from easyanimate_core.models.transformer import VideoTransformer

CONFIG = tiny_pixart(basic_block_type="motionmodule", motion_module_type="Vanilla",
                     motion_module_kwargs={"num_attention_heads": 2, "num_transformer_block": 1,
                                           "temporal_position_encoding": True})
MOTION_Q = "transformer_blocks.1.attn_temporal.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q"
SPATIAL_Q = "transformer_blocks.0.attn1.to_q"
CROSS_OUT = "transformer_blocks.1.attn2.to_out.0"
FF = "transformer_blocks.0.ff.net.2"


def _model(**extra):
    model = VideoTransformer.from_config({**CONFIG, **extra}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _pairs(layers, names, rank=4, scale=0.5):
    return {n: LoraPair(torch.randn(rank, layers[n].in_features) * 0.1, torch.randn(layers[n].out_features, rank) * 0.1,
                        scale) for n in names}


def _run(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        return model(torch.randn(1, 4, 3, 8, 8, generator=g), torch.tensor([300]), torch.randn(1, 5, 32, generator=g))


def _snapshot(model):
    return {k: (v.clone(), v.data_ptr()) for k, v in model.state_dict().items()}


def _assert_restored(model, snapshot):
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshot[key][0]) and tensor.data_ptr() == snapshot[key][1], key


def _explicit(model, pairs, strength):
    """Copy of the model with W += strength * scale * up @ down (float64 product)."""
    merged = _model()
    merged.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, pair in pairs.items():
            weight = merged.get_submodule(name).weight
            weight += (strength * pair.scale * (pair.up.double() @ pair.down.double())).float()
    return merged


def test_kohya_lora_strength_scale_and_exact_removal(tmp_path):
    model = _model()
    layers = linear_layers(model)
    pairs = _pairs(layers, [SPATIAL_Q, CROSS_OUT, FF, "adaln_single.linear", MOTION_Q], rank=4, scale=0.5)
    state = lora_state_dict(pairs, format="kohya")
    assert any(k.startswith("lora_unet__transformer_blocks_0_attn1_to_q") for k in state)  # EasyAnimate naming
    path = tmp_path / "style.safetensors"
    save_state_dict(path, state)
    weights = load_lora(path, layers)
    assert sorted(weights.pairs) == sorted(pairs) and weights.pairs[SPATIAL_Q].scale == pytest.approx(0.5)
    before, snapshot = _run(model), _snapshot(model)
    with loras_applied(layers, [(weights, 0.8)]):
        patched = _run(model)
    _assert_restored(model, snapshot)
    assert torch.allclose(_run(model), before, atol=1e-5)
    expected = _run(_explicit(model, pairs, 0.8))
    assert (patched - expected).abs().max() < 1e-5
    assert (patched - before).abs().max() > 1e-3
    wrong_scale = _run(_explicit(model, pairs, 0.8 / 0.5))  # forgetting alpha/rank must be caught
    assert (patched - wrong_scale).abs().max() > 1e-4


def test_peft_lora_reads_alpha_from_adapter_config(tmp_path):
    model = _model()
    layers = linear_layers(model)
    pairs = _pairs(layers, [SPATIAL_Q, FF], rank=8, scale=1.0)
    folder = tmp_path / "peft"
    folder.mkdir()
    save_state_dict(folder / "adapter_model.safetensors", lora_state_dict(pairs, format="peft"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 4}))
    weights = load_lora(folder / "adapter_model.safetensors", layers)
    assert weights.pairs[FF].scale == pytest.approx(0.5)
    with loras_applied(layers, [(weights, 1.0)]):
        patched = _run(model)
    expected = _run(_explicit(model, {n: LoraPair(p.down, p.up, 0.5) for n, p in pairs.items()}, 1.0))
    assert (patched - expected).abs().max() < 1e-5


def test_stacked_loras_add_up_and_runtime_equals_merged():
    model = _model()
    layers = linear_layers(model)
    a = load_lora(lora_state_dict(_pairs(layers, [SPATIAL_Q, FF]), format="kohya"), layers)
    b = load_lora(lora_state_dict(_pairs(layers, [SPATIAL_Q, CROSS_OUT], scale=0.25), format="kohya"), layers)
    snapshot = _snapshot(model)
    with loras_applied(layers, [(a, 0.7), (b, -1.2)]):
        stacked = _run(model)
    with loras_applied(layers, [(a, 0.7), (b, -1.2)], merge=False):
        runtime = _run(model)
        assert len(layers[SPATIAL_Q].adapters) == 2
    _assert_restored(model, snapshot)
    assert all(not layer.adapters for layer in layers.values())
    reference = _explicit(_explicit(model, a.pairs, 0.7), b.pairs, -1.2)
    assert (stacked - _run(reference)).abs().max() < 1e-5
    assert (runtime - stacked).abs().max() < 1e-5


def test_fp8_weights_use_runtime_adapters_and_restore_exactly():
    model = _model()
    model.set_weight_dtype(torch.float8_e4m3fn, compute_dtype=torch.float32)
    layers = linear_layers(model)
    weights = load_lora(lora_state_dict(_pairs(layers, [SPATIAL_Q]), format="kohya"), layers)
    snapshot = _snapshot(model)
    base = _run(model)
    with loras_applied(layers, [(weights, 1.0)]):
        assert layers[SPATIAL_Q].weight.dtype == torch.float8_e4m3fn and len(layers[SPATIAL_Q].adapters) == 1
        assert (_run(model) - base).abs().max() > 1e-4
    _assert_restored(model, snapshot)


def test_motion_lora_processor_format_touches_motion_attention_only(tmp_path):
    model = _model()
    layers = linear_layers(model)
    names = [n for n in layers if ".attn_temporal." in n and ".attention_blocks." in n]
    pairs = _pairs(layers, names, rank=4, scale=1.0)
    path = tmp_path / "zoom.safetensors"
    save_state_dict(path, lora_state_dict(pairs, format="motion_lora"))
    weights = load_lora(path, layers, kind="motion_lora")
    assert sorted(weights.pairs) == sorted(names) and weights.format == "motion_lora"
    before = {n: layer.weight.clone() for n, layer in layers.items()}
    with loras_applied(layers, [(weights, 1.0)]):
        changed = {n for n, layer in layers.items() if not torch.equal(layer.weight, before[n])}
        patched = _run(model)
    assert changed == set(names)
    assert (patched - _run(_explicit(model, pairs, 1.0))).abs().max() < 1e-5
    image_model = VideoTransformer.from_config({k: v for k, v in CONFIG.items() if "motion" not in k
                                                and k != "basic_block_type"})
    with pytest.raises(InputError, match="no motion modules"):
        load_lora(path, linear_layers(image_model), kind="motion_lora")
    spatial = lora_state_dict(_pairs(layers, [SPATIAL_Q]), format="motion_lora")
    with pytest.raises(CheckpointError, match="not motion-module attention"):
        load_lora(spatial, layers, kind="motion_lora")


def test_domain_adapter_scale_and_targets():
    model = _model()
    layers = linear_layers(model)
    names = [n for n in layers if (".attn1." in n or ".attn2." in n)]
    pairs = _pairs(layers, names, rank=8, scale=1.0)
    adapter = load_lora(lora_state_dict(pairs, format="motion_lora"), layers, kind="domain_adapter")
    base, snapshot = _run(model), _snapshot(model)
    with loras_applied(layers, [(adapter, 0.6)]):
        patched = _run(model)
    assert (patched - _run(_explicit(model, pairs, 0.6))).abs().max() < 1e-5
    with loras_applied(layers, [(adapter, 0.0)]):  # scale 0 removes it
        assert torch.allclose(_run(model), base, atol=1e-5)
        assert all(torch.equal(v, snapshot[k][0]) for k, v in model.state_dict().items())
    _assert_restored(model, snapshot)
    with pytest.raises(CheckpointError, match="not image attention"):
        load_lora(lora_state_dict(_pairs(layers, [MOTION_Q]), format="kohya"), layers, kind="domain_adapter")


def test_file_errors():
    model = _model()
    layers = linear_layers(model)
    with pytest.raises(CheckpointError, match="matches no module"):
        load_lora({"lora_unet_something_else.lora_down.weight": torch.zeros(4, 8),
                   "lora_unet_something_else.lora_up.weight": torch.zeros(8, 4)}, layers)
    good = lora_state_dict(_pairs(layers, [SPATIAL_Q]), format="kohya")
    stray = {**good, "lora_unet_not_a_layer.lora_down.weight": torch.zeros(4, 8),
             "lora_unet_not_a_layer.lora_up.weight": torch.zeros(8, 4)}
    with pytest.raises(CheckpointError, match="match no layer"):
        load_lora(stray, layers)
    wide = {n: LoraPair(torch.zeros(4, 128), torch.zeros(64, 4), 1.0) for n in [SPATIAL_Q]}
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_lora(lora_state_dict(wide, format="kohya"), layers)
    with pytest.raises(InputError, match="unknown LoRA kind"):
        load_lora(good, layers, kind="style")


@pytest.mark.parametrize("target,count", [("all", None), ("motion", 16), ("spatial_attention", 16)])
def test_trainable_lora_targets_training_and_round_trip(target, count, tmp_path):
    model = _model()
    all_linear = len(linear_layers(model))
    base = _run(model)
    params = add_trainable_lora(model, target=target, rank=4, alpha=2)
    adapters = list(model.trainable_lora.values())
    assert len(adapters) == (count or all_linear) and len(params) == 2 * len(adapters)
    if target == "motion":
        assert all(".attn_temporal." in a.target and ".attention_blocks." in a.target for a in adapters)
    if target == "spatial_attention":
        assert all(".attn1." in a.target or ".attn2." in a.target for a in adapters)
    assert torch.allclose(_run(model), base, atol=1e-5)  # up starts at zero
    assert all(a.up.abs().max() == 0 and a.down.abs().max() > 0 for a in adapters)
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        out = model(torch.randn(1, 4, 2, 8, 8), torch.tensor([100]), torch.randn(1, 5, 32))
        out.square().mean().backward()
        optimizer.step()
    trained = _run(model)
    assert (trained - base).abs().max() > 1e-4
    fmt = "motion_lora" if target != "all" else "kohya"
    path = tmp_path / "trained.safetensors"
    save_state_dict(path, trainable_lora_state_dict(model, format=fmt))
    remove_trainable_lora(model)
    # (outputs are compared with a tolerance: CPU GEMM rounding can depend on buffer alignment)
    assert not hasattr(model, "trainable_lora") and torch.allclose(_run(model), base, atol=1e-5)
    layers = linear_layers(model)
    reloaded = load_lora(path, layers, kind={"all": "lora", "motion": "motion_lora",
                                             "spatial_attention": "domain_adapter"}[target])
    with loras_applied(layers, [(reloaded, 1.0)]):
        assert (_run(model) - trained).abs().max() < 1e-5


def test_trainable_lora_errors():
    image_model = VideoTransformer.from_config({k: v for k, v in CONFIG.items() if "motion" not in k
                                                and k != "basic_block_type"})
    with pytest.raises(InputError, match="no motion modules"):
        add_trainable_lora(image_model, target="motion")
    with pytest.raises(InputError, match="unknown LoRA target"):
        add_trainable_lora(image_model, target="ff")
    with pytest.raises(InputError, match="no trainable LoRA adapters"):
        trainable_lora_state_dict(image_model)
    add_trainable_lora(image_model, target="all", rank=2)
    with pytest.raises(InputError, match="already has"):
        add_trainable_lora(image_model, target="all")


def test_apply_rejects_a_lora_for_another_model():
    model = _model()
    other = _model(num_layers=3)
    layers = linear_layers(other)
    weights = load_lora(lora_state_dict(_pairs(layers, ["transformer_blocks.2.attn1.to_q"]), format="kohya"), layers)
    with pytest.raises(InputError, match="does not have"):
        apply_loras(linear_layers(model), [(weights, 1.0)])

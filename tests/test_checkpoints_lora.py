"""LoRA key normalisation for every published layout, and saving back into them."""

import pytest
import torch

from easyanimate_core.checkpoints import (
    LoraPair,
    inspect_checkpoint,
    load_state_dict,
    lora_state_dict,
    normalize_lora,
    save_state_dict,
)
from easyanimate_core.errors import CheckpointError, InputError

H = 8
MM = "transformer_blocks.{}.attn_temporal.temporal_transformer.transformer_blocks.0.attention_blocks.{}.{}"


def module_shapes(depth=12):
    """Linear modules of a tiny EasyAnimate DiT: name -> weight shape (out, in). depth 12 makes
    block 1 vs block 11 (and to_out.0) prefix traps for any greedy underscore matching."""
    shapes = {"proj_out": (32, H), "adaln_single.linear": (6 * H, H), "caption_projection.linear_1": (H, 4)}
    for i in range(depth):
        for attn in ("attn1", "attn2"):
            for name in ("to_q", "to_k", "to_v", "to_out.0"):
                shapes[f"transformer_blocks.{i}.{attn}.{name}"] = (H, H)
        shapes[f"transformer_blocks.{i}.ff.net.0.proj"] = (4 * H, H)
        shapes[f"transformer_blocks.{i}.ff.net.2"] = (H, 4 * H)
        for a in range(2):
            for name in ("to_q", "to_k", "to_v", "to_out.0"):
                shapes[MM.format(i, a, name)] = (H, H)
    shapes.update({f"long_connect_fc.{i}": (H, H) for i in range(11)})
    return shapes


def pair(out, inp, rank=4):
    return torch.randn(rank, inp), torch.randn(out, rank)


TARGETS = [
    "transformer_blocks.1.attn1.to_q",
    "transformer_blocks.11.attn1.to_q",
    "transformer_blocks.1.attn2.to_out.0",
    "transformer_blocks.3.ff.net.2",
    "long_connect_fc.1",
    "long_connect_fc.10",
    MM.format(11, 1, "to_out.0"),
]


def weights(targets=TARGETS, rank=4):
    shapes = module_shapes()
    return {name: pair(*shapes[name], rank=rank) for name in targets}


def kohya(ws, double=True, alpha=2.0):
    sd = {}
    for name, (down, up) in ws.items():
        stem = "lora_unet_" + ("_" if double else "") + name.replace(".", "_")
        sd[f"{stem}.lora_down.weight"], sd[f"{stem}.lora_up.weight"] = down, up
        if alpha is not None:
            sd[f"{stem}.alpha"] = torch.tensor(alpha)
    return sd


def check(pairs, ws, scale):
    assert set(pairs) == set(ws)
    for name, (down, up) in ws.items():
        assert torch.equal(pairs[name].down, down) and torch.equal(pairs[name].up, up)
        assert pairs[name].scale == pytest.approx(scale)


@pytest.mark.parametrize("double", [True, False])
def test_kohya_single_and_double_underscore(double):
    ws = weights()
    pairs = normalize_lora(kohya(ws, double=double), module_shapes())
    check(pairs, ws, 2.0 / 4)
    assert pairs.format == "lora_kohya" and pairs.unmatched == []


def test_kohya_missing_alpha_means_rank_and_1x1_convs_flatten():
    ws = weights(TARGETS[:2])
    check(normalize_lora(kohya(ws, alpha=None), list(module_shapes())), ws, 1.0)
    sd = kohya(ws)
    for key in list(sd):
        if key.endswith("weight"):
            sd[key] = sd[key][:, :, None, None]
    pairs = normalize_lora(sd, module_shapes())
    assert pairs["transformer_blocks.1.attn1.to_q"].down.shape == (4, H)


def test_kohya_ambiguous_names_are_never_guessed():
    names = {"a_b.c": (H, H), "a.b_c": (H, H), "a.b.d": (H, H)}
    sd = kohya({"a_b.c": pair(H, H), "a.b.d": pair(H, H)}, double=False)
    pairs = normalize_lora(sd, names)
    assert set(pairs) == {"a.b.d"}  # a_b_c could be either module: reported, not applied
    assert pairs.unmatched == [
        "lora_unet_a_b_c.alpha",
        "lora_unet_a_b_c.lora_down.weight",
        "lora_unet_a_b_c.lora_up.weight",
    ]


def test_kohya_text_encoder_and_stray_keys_are_reported():
    ws = weights(TARGETS[:1])
    sd = kohya(ws)
    sd["lora_te_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight"] = torch.randn(4, 16)
    sd["lora_te_encoder_block_0_layer_0_SelfAttention_q.lora_up.weight"] = torch.randn(16, 4)
    sd["lora_unet__not_a_module.lora_down.weight"] = torch.randn(4, H)
    pairs = normalize_lora(sd, module_shapes())
    assert set(pairs) == set(ws)
    assert len(pairs.unmatched) == 3 and "lora_unet__not_a_module.lora_down.weight" in pairs.unmatched


@pytest.mark.parametrize(
    "prefix, adapter",
    [
        ("", None),
        ("transformer.", {"r": 4, "lora_alpha": 8}),
        ("base_model.model.", {"r": 4, "lora_alpha": 2}),
        ("unet.", None),
    ],
)
@pytest.mark.parametrize("default", [False, True])
def test_peft_layouts(prefix, adapter, default):
    ws = weights()
    middle = ".default" if default else ""
    sd = {}
    for name, (down, up) in ws.items():
        sd[f"{prefix}{name}.lora_A{middle}.weight"], sd[f"{prefix}{name}.lora_B{middle}.weight"] = down, up
    pairs = normalize_lora(sd, module_shapes(), adapter_config=adapter)
    check(pairs, ws, adapter["lora_alpha"] / 4 if adapter else 1.0)
    assert pairs.format == "lora_peft"


def test_motion_lora_processor_layout():
    names = [MM.format(2, 0, "to_q"), MM.format(2, 1, "to_out.0"), MM.format(11, 0, "to_v")]
    ws = weights(names)
    sd = {}
    for name, (down, up) in ws.items():
        parent, leaf = name.removesuffix(".0").rsplit(".", 1)
        sd[f"{parent}.processor.{leaf}_lora.down.weight"] = down
        sd[f"{parent}.processor.{leaf}_lora.up.weight"] = up
    assert "processor.to_out_lora.up.weight" in "".join(sd)
    pairs = normalize_lora(sd, module_shapes())
    check(pairs, ws, 1.0)
    assert pairs.format == "motion_lora"


@pytest.mark.parametrize(
    "fmt, targets",
    [
        ("kohya", TARGETS),
        ("peft", TARGETS),
        ("motion_lora", [MM.format(0, 0, "to_q"), MM.format(5, 1, "to_out.0")]),
    ],
)
def test_save_round_trip_keeps_delta(tmp_path, fmt, targets):
    pairs = {name: LoraPair(down, up, 0.375) for name, (down, up) in weights(targets).items()}
    path = tmp_path / f"{fmt}.safetensors"
    save_state_dict(path, lora_state_dict(pairs, format=fmt))
    loaded = normalize_lora(load_state_dict(path), module_shapes())
    assert set(loaded) == set(pairs)
    for name, original in pairs.items():
        torch.testing.assert_close(loaded[name].delta(), original.delta())
    family = inspect_checkpoint(path).family
    assert family == {"kohya": "lora_kohya", "peft": "lora_peft", "motion_lora": "motion_lora"}[fmt]
    if fmt == "kohya":
        assert all(k.startswith("lora_unet__") for k in load_state_dict(path))


def test_inspect_lora_reports_rank_alpha_and_targets():
    info = inspect_checkpoint(kohya(weights(rank=4), alpha=2.0))
    assert info.family == "lora_kohya" and info.version is None
    assert info.config["rank"] == 4 and info.config["alpha"] == 2.0 and info.config["targets"] == len(TARGETS)
    assert info.config["motion_module_targets"] == 1
    assert {"to_q", "to_out_0", "ff_net_2", "long_connect_fc"} <= set(info.config["target_kinds"])


def test_lora_error_paths():
    shapes = module_shapes()
    with pytest.raises(CheckpointError, match="my.safetensors matches no module.*expected LoRA keys naming"):
        normalize_lora(kohya({"other.layer": pair(H, H)}, double=False), shapes, source="my.safetensors")
    down, up = pair(H, H)
    sd = kohya({"proj_out": (down, up)})
    with pytest.raises(
        CheckpointError, match="shape mismatch: the LoRA for proj_out is \\[8, 8\\].*\\[32, 8\\]"
    ):
        normalize_lora(sd, shapes)
    sd = kohya({"transformer_blocks.0.attn1.to_q": (torch.randn(4, H), torch.randn(H, 3))})
    with pytest.raises(CheckpointError, match="ranks must agree"):
        normalize_lora(sd, shapes)
    sd = kohya({"transformer_blocks.0.attn1.to_q": pair(H, H)})
    del sd["lora_unet__transformer_blocks_0_attn1_to_q.lora_up.weight"]
    with pytest.raises(CheckpointError, match="missing required keys: the up weight"):
        normalize_lora(sd, shapes)
    sd = kohya({"transformer_blocks.0.attn1.to_q": (torch.randn(4, H, 3), torch.randn(H, 4))})
    with pytest.raises(CheckpointError, match="expected a matrix"):
        normalize_lora(sd, shapes)
    with pytest.raises(InputError, match="only holds attention projections"):
        lora_state_dict(
            {"transformer_blocks.0.ff.net.2": LoraPair(*pair(H, 4 * H), 1.0)}, format="motion_lora"
        )
    with pytest.raises(InputError, match="unknown LoRA format"):
        lora_state_dict({}, format="lycoris")


def test_peft_names_with_kohya_alphas_and_alpha_in_file_reports(tmp_path):
    ws = weights(TARGETS[:2])
    sd = {}
    for name, (down, up) in ws.items():
        sd[f"transformer.{name}.lora_A.weight"], sd[f"transformer.{name}.lora_B.weight"] = down, up
        sd[f"transformer.{name}.alpha"] = torch.tensor(1.0)
    check(normalize_lora(sd, module_shapes()), ws, 1.0 / 4)
    save_state_dict(tmp_path / "k.safetensors", kohya(ws, alpha=3.0))
    assert inspect_checkpoint(tmp_path / "k.safetensors").config["alpha"] == 3.0

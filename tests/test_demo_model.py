"""The shipped default model (models/vdit_default): it loads through the public loaders, stays
small, and the generate command makes a clip of the right length from it."""

from pathlib import Path

import pytest
import torch
import yaml

MODEL = Path(__file__).resolve().parents[1] / "models" / "vdit_default"


def test_shipped_model_is_small_and_complete():
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    # about 10 MB: the DiT is stored twice, whole (transformer/) and split for the v1-style workflow
    # (pixart_base/ + motion_module.safetensors, 4.3 MB)
    assert sum(p.stat().st_size for p in files) < 11 * 2**20
    for part in ("transformer/config.json", "vae/config.json", "text_encoder/config.json",
                 "tokenizer/spiece.model", "motion_lora/pan_left.safetensors", "generate.yaml",
                 "pixart_base/config.json", "motion_module.safetensors"):
        assert (MODEL / part).is_file(), part


def test_shipped_model_generates_the_requested_frames(tmp_path):
    from easyanimate_core.video_io import probe_video
    from training.generate import main

    defaults = yaml.safe_load((MODEL / "generate.yaml").read_text())
    out = tmp_path / "clip.mp4"
    argv = ["--config", str(MODEL / "generate.yaml"), "--model", str(MODEL), "--steps", "2",
            "--prompt", "a red circle moves to the right on a black background", "--output", str(out)]
    assert main("generate", argv) == 0
    info = probe_video(out)
    assert info.num_frames == defaults["frames"] and (info.width, info.height) == (defaults["width"],
                                                                                       defaults["height"])


def test_shipped_motion_lora_changes_only_motion_modules():
    from easyanimate_core.models.lora import apply_loras, linear_layers, load_lora
    from easyanimate_core.models.transformer import load_transformer

    transformer = load_transformer(MODEL / "transformer", dtype=torch.float32)
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    layers = linear_layers(transformer)
    applied = apply_loras(layers, [(load_lora(str(MODEL / "motion_lora" / "pan_left.safetensors"), layers,
                                              kind="motion_lora"), 1.0)])
    changed = {k for k, v in transformer.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".attn_temporal." in k for k in changed)
    applied.remove()
    assert all(torch.equal(v, before[k]) for k, v in transformer.state_dict().items())


def test_demo_eval_names_the_seam_options_on_a_wrong_one(capsys):
    from training.demo.evaluate import main

    with pytest.raises(SystemExit):
        main("demo-eval", ["--seam", "soft"])
    assert "'none', 'blend', 'smooth'" in capsys.readouterr().err

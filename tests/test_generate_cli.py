"""``run.py generate`` on a tiny release folder: every mode writes a playable file of the asked
frame count and size; bad models and options fail with one clear sentence."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_models import save_model_folder

from easyanimate_core.errors import CheckpointError, InputError
from easyanimate_core.video_io import probe_video, read_video, write_video
from training.generate import lora_spec, main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--width", "32", "--height", "32", "--steps", "2", "--seam", "none", "--prompt", "a red car",
        "--negative", "blurry"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model_folder(tmp_path_factory.mktemp("release"), in_channels=12)


def picture(path, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_text_to_video_and_image(model, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main("generate", ["--model", str(model), *FAST, "--frames", "9", "--output", str(out)]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (9, 32, 32, 3)
    assert "generate" in capsys.readouterr().err  # the progress bar
    assert main("generate", ["--model", str(model), *FAST, "--frames", "1", "--output", str(tmp_path / "x.mp4")]) == 0
    assert (tmp_path / "x.png").is_file()


def test_config_file_with_images_and_flag_overrides(model, tmp_path):
    config = tmp_path / "i2v.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(model), "prompt": "a dog runs", "negative": "blurry", "frames": 17, "width": 64, "height": 64,
        "start_image": picture(tmp_path / "a.png", 1), "end_image": picture(tmp_path / "b.png", 2),
        "output": str(tmp_path / "i2v.mp4"), "seam": "blend"}))
    assert main("generate", ["--config", str(config), "--steps", "2", "--width", "32", "--height", "32"]) == 0
    info = probe_video(tmp_path / "i2v.mp4")
    assert (info.num_frames, info.width, info.height) == (17, 32, 32)


def test_video_to_video(model, tmp_path):
    source = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "in.mp4", source, fps=8)
    out = tmp_path / "v2v.mp4"
    assert main("generate", ["--model", str(model), *FAST, "--frames", "9", "--video", str(tmp_path / "in.mp4"),
                             "--strength", "0.5", "--output", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 32, 32, 3)


@pytest.mark.parametrize("mode", [["--chunk-frames", "16", "--overlap-frames", "4"],
                                  ["--context-length", "3", "--context-overlap", "1"]])
def test_long_video_modes(model, tmp_path, mode):
    out = tmp_path / "long.mp4"
    assert main("generate", ["--model", str(model), *FAST, "--frames", "28", *mode, "--output", str(out)]) == 0
    expected = 28 if mode[0] == "--chunk-frames" else 25  # one pass: 28 is floored to 25 (1 + 8k)
    assert read_video(out)[0].shape == (expected, 32, 32, 3)


def test_missing_and_mismatched_models_say_what_to_do(model, tmp_path):
    with pytest.raises(CheckpointError, match="--model .* is not a folder"):
        main("generate", ["--model", str(tmp_path / "nope"), *FAST])
    with pytest.raises(CheckpointError, match="no text encoder given"):
        main("generate", ["--transformer", str(model / "transformer"), "--vae", str(model / "vae"), *FAST])
    with pytest.raises(CheckpointError):  # a DiT where the VAE belongs
        main("generate", ["--model", str(model), "--vae", str(model / "transformer"), *FAST])
    with pytest.raises(InputError, match="no prompt"):
        main("generate", ["--model", str(model)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("promt: typo\n")
    with pytest.raises(InputError, match="unknown option"):
        main("generate", ["--config", str(bad)])
    with pytest.raises(InputError, match="--device"):
        main("generate", ["--model", str(model), *FAST, "--device", "gpu0"])


def test_errors_print_one_line_through_run_py(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "training" / "run.py"), "generate", "--prompt", "x",
                             "--model", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_loras_are_applied_at_their_strength(model, tmp_path):
    from tiny_models import build_dit

    from easyanimate_core.checkpoints import save_state_dict
    from easyanimate_core.models.lora import add_trainable_lora, trainable_lora_state_dict

    dit = build_dit(12)
    for up in add_trainable_lora(dit, rank=4)[1::2]:
        torch.nn.init.normal_(up, std=0.5)
    save_state_dict(tmp_path / "style.safetensors", trainable_lora_state_dict(dit))
    runs = {}
    for name, extra in {"plain": [], "lora": ["--loras", f"{tmp_path / 'style.safetensors'}:0.8"]}.items():
        out = tmp_path / f"{name}.mp4"
        assert main("generate", ["--model", str(model), *FAST, "--frames", "9", "--output", str(out), *extra]) == 0
        runs[name] = read_video(out)[0]
    assert runs["lora"].shape == (9, 32, 32, 3) and not np.array_equal(runs["lora"], runs["plain"])
    with pytest.raises(CheckpointError, match="LoRA file"):
        main("generate", ["--model", str(model), *FAST, "--loras", str(tmp_path / "none.safetensors")])


def test_lora_spec_parsing(tmp_path):
    assert lora_spec("style.safetensors") == ("style.safetensors", 1.0)
    assert lora_spec("style.safetensors:0.6") == ("style.safetensors", 0.6)
    assert lora_spec("C:/loras/style.safetensors") == ("C:/loras/style.safetensors", 1.0)


def test_option_errors(model, tmp_path):
    with pytest.raises(InputError, match="dtype: expected one of auto, fp32, bf16, fp16, got 'fp64' \\(in command line\\)"):
        main("generate", ["--model", str(model), *FAST, "--dtype", "fp64"])
    with pytest.raises(InputError, match="does not exist"):
        main("generate", ["--config", str(tmp_path / "none.yaml")])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="key: value"):
        main("generate", ["--config", str(listing)])
    with pytest.raises(InputError, match="start image only"):
        main("generate", ["--model", str(model), *FAST, "--chunk-frames", "16", "--end-image",
                          picture(tmp_path / "e.png", 3)])


@pytest.mark.parametrize("config", sorted((ROOT / "training" / "configs").glob("generate_*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_use_known_options(config):
    from training.generate import DEFAULTS, OPTIONS, _read_yaml
    from training.options import validate

    options = _read_yaml(config)
    assert options["prompt"] and set(options) <= set(DEFAULTS)
    assert validate({**DEFAULTS, **options}, OPTIONS, dict.fromkeys(options, str(config)))["prompt"]


def test_without_a_model_the_embedded_default_and_its_settings_are_used(model, tmp_path, monkeypatch):
    import shutil

    from training import generate

    shutil.copytree(model, tmp_path / "default")
    (tmp_path / "default" / "generate.yaml").write_text("width: 32\nheight: 32\nframes: 9\nsteps: 2\nseam: none\n")
    monkeypatch.setattr(generate, "DEFAULT_MODEL", tmp_path / "default")
    config = generate.parse(["--prompt", "a red circle"])
    assert config["model"] == str(tmp_path / "default") and config["frames"] == 9 and config["threads"] == 1
    assert generate.parse(["--prompt", "x", "--frames", "17"])["frames"] == 17          # flags still win
    named = generate.parse(["--prompt", "x", "--model", str(model)])
    assert named["model"] == str(model) and named["frames"] == generate.DEFAULTS["frames"] and named["threads"] == 0
    out = tmp_path / "clip.mp4"
    assert main("generate", ["--prompt", "a red circle", "--output", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 32, 32, 3)


def test_a_named_model_folder_brings_its_own_settings(model, tmp_path):
    """A folder demo-train wrote elsewhere (output=...) generates at the size it was trained for,
    not at the release defaults (672x672, 144 frames: minutes on a CPU for a 32x32 model)."""
    import shutil

    from training import generate

    shutil.copytree(model, tmp_path / "mine")
    (tmp_path / "mine" / "generate.yaml").write_text("width: 32\nheight: 32\nframes: 9\nsteps: 2\n")
    config = generate.parse(["--prompt", "x", "--model", str(tmp_path / "mine")])
    assert (config["width"], config["frames"], config["steps"]) == (32, 9, 2)
    assert generate.parse(["--prompt", "x", "--model", str(tmp_path / "mine"), "--frames", "17"])["frames"] == 17


def test_a_missing_default_model_says_how_to_get_one(tmp_path, monkeypatch):
    from training import generate

    monkeypatch.setattr(generate, "DEFAULT_MODEL", tmp_path / "absent")
    with pytest.raises(CheckpointError, match="demo-train"):
        generate.parse(["--prompt", "x"])

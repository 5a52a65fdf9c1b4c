"""LoRA trainers: LoRA / MotionLoRA / domain adapter learn, touch only their layers, and the
exported files load through the pack's LoRA loader at any strength; camera augmentation."""

import pytest
import torch
from train_helpers import (
    dit_yaml,
    fixed_eval_loss,
    image_dit_config,
    make_dataset,
    motion_config,
    write_models,
)

from easyanimate_core.errors import InputError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tiny_models import _save_diffusers

    from easyanimate_core.models.transformer import VideoTransformer

    root = tmp_path_factory.mktemp("lora")
    models = write_models(root / "models")
    torch.manual_seed(3)
    base = VideoTransformer.from_config({**image_dit_config(), **motion_config()})
    with torch.no_grad():  # a "trained" base: zero-initialised motion-module outputs would hide a MotionLoRA
        for param in base.parameters():
            if not param.any():
                param.normal_(0, 0.02)
    _save_diffusers(root / "base", base)
    videos = make_dataset(root / "videos", videos=2, images=0, frames=12)
    one_image = make_dataset(root / "one", videos=0, images=1)
    return models, root / "base", videos, one_image, root


def _trained_model(base, checkpoint, cfg_lora):
    """The base with trainable adapters holding the weights of a training checkpoint."""
    from safetensors.torch import load_file

    from easyanimate_core.models.lora import add_trainable_lora
    from easyanimate_core.models.transformer import load_transformer

    model = load_transformer(str(base))
    add_trainable_lora(model, cfg_lora["target"], cfg_lora["rank"], cfg_lora["alpha"])
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=True)
    return model.eval()


def _with_lora_file(base, path, kind, strength):
    from easyanimate_core.models.lora import apply_loras, linear_layers, load_lora
    from easyanimate_core.models.transformer import load_transformer

    model = load_transformer(str(base)).eval()
    layers = linear_layers(model)
    apply_loras(layers, [(load_lora(str(path), layers, kind=kind), strength)])
    return model


@pytest.mark.parametrize("command,kind,file_name,target", [
    ("lora", "lora", "lora.safetensors", "all"),
    ("motion-lora", "motion_lora", "motion_lora.safetensors", "motion"),
    ("domain-adapter", "domain_adapter", "domain_adapter.safetensors", "spatial_attention"),
])
def test_exported_file_reproduces_the_trained_adapters(setup, tmp_path, command, kind, file_name, target):
    from easyanimate_core.models.lora import is_motion_attention, is_spatial_attention
    from easyanimate_core.models.transformer import load_transformer
    from training.train_lora import main

    models, base, videos, _, _ = setup
    lora = {"rank": 4, "alpha": 2.0}
    cfg = dit_yaml(tmp_path / "c.yaml", models, videos, tmp_path / "out", model={"pretrained": str(base)},
                   lora=lora, train={"steps": 3, "checkpoint_every": 3})
    extra = ["augment.camera_moves=[zoom_in, pan_left]"] if command == "motion-lora" else []
    assert main(command, ["--config", cfg, *extra]) == 0
    path = tmp_path / "out" / file_name
    trained = _trained_model(base, tmp_path / "out" / "checkpoints" / "checkpoint-00000003",
                             {"target": target, **lora})
    x, t, text = torch.randn(1, 4, 3, 4, 4), torch.tensor([400]), torch.randn(1, 6, 32)
    with torch.no_grad():
        expected = trained(x, t, text)
        plain = load_transformer(str(base)).eval()(x, t, text)
        assert not torch.allclose(expected, plain, atol=1e-6)            # the adapters did learn
        assert torch.allclose(_with_lora_file(base, path, kind, 1.0)(x, t, text), expected, atol=1e-5)
        assert torch.allclose(_with_lora_file(base, path, kind, 0.0)(x, t, text), plain, atol=1e-6)
        half = _with_lora_file(base, path, kind, 0.5)(x, t, text)
        assert not torch.allclose(half, plain, atol=1e-7) and not torch.allclose(half, expected, atol=1e-7)
    from easyanimate_core.checkpoints import load_state_dict
    from easyanimate_core.models.lora import linear_layers, load_lora
    layers = linear_layers(load_transformer(str(base)))
    names = set(load_lora(str(path), layers, kind=kind).pairs)
    if target == "motion":
        assert names and all(is_motion_attention(n) for n in names)
    elif target == "spatial_attention":
        assert names and all(is_spatial_attention(n) for n in names)
    else:
        assert any("attn_temporal" in n for n in names) and any(".ff." in n for n in names)
    assert load_state_dict(str(path))   # a plain safetensors file


def test_lora_loss_goes_down(setup, tmp_path):
    from training.train_lora import main

    models, base, _, one_image, _ = setup
    cfg = dit_yaml(tmp_path / "c.yaml", models, one_image, tmp_path / "out", model={"pretrained": str(base)},
                   lora={"rank": 8, "alpha": 8.0}, data={"batch_size": 1, "frames": 1},
                   train={"steps": 25, "lr": 3e-3, "max_grad_norm": 0.0})
    assert main("lora", ["--config", cfg]) == 0
    from easyanimate_core.models.transformer import load_transformer
    before = fixed_eval_loss(load_transformer(str(base)).eval(), models, one_image)
    after = fixed_eval_loss(_with_lora_file(base, tmp_path / "out" / "lora.safetensors", "lora", 1.0),
                            models, one_image)
    assert after < 0.8 * before


def test_peft_format_writes_adapter_config(setup, tmp_path):
    from training.train_lora import main

    models, base, videos, _, _ = setup
    cfg = dit_yaml(tmp_path / "c.yaml", models, videos, tmp_path / "out", model={"pretrained": str(base)},
                   lora={"rank": 4, "alpha": 2.0, "format": "peft"}, train={"steps": 1})
    assert main("lora", ["--config", cfg]) == 0
    from easyanimate_core.models.lora import linear_layers, load_lora
    from easyanimate_core.models.transformer import load_transformer
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert load_lora(str(tmp_path / "out" / "lora.safetensors"), linear_layers(load_transformer(str(base))))


def test_motion_lora_needs_motion_modules(setup, tmp_path):
    from training.train_lora import main

    models, _, videos, _, _ = setup
    cfg = dit_yaml(tmp_path / "c.yaml", models, videos, tmp_path / "out", model={"config": image_dit_config()})
    with pytest.raises(InputError, match="no motion modules"):
        main("motion-lora", ["--config", cfg])


def _stripe_video(frames=5, size=32):
    video = -torch.ones(3, frames, size, size)
    video[:, :, :, 14:18] = 1.0   # a vertical white stripe in the middle
    return video


def _stripe_x(frame):
    return float((frame[0].mean(0) > 0).float().nonzero().float().mean())


def test_camera_moves():
    from training.augment import camera_move

    video = _stripe_video()
    left = camera_move(video, "pan_left", 0.25)
    xs = [_stripe_x(left[:, f]) for f in range(5)]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 4        # camera pans left: the scene drifts right
    right = camera_move(video, "pan_right", 0.25)
    assert _stripe_x(right[:, -1]) < _stripe_x(right[:, 0]) - 4
    zoom = camera_move(video, "zoom_in", 0.5)
    widths = [float((zoom[0, f].mean(0) > 0).sum()) for f in range(5)]
    assert widths == sorted(widths) and widths[-1] >= 1.8 * widths[0]   # the stripe grows as we zoom
    out = camera_move(video, "zoom_out", 0.5)
    assert torch.allclose(out[:, -1], video[:, -1], atol=1e-5)          # ends on the full frame
    with pytest.raises(InputError, match="not one of"):
        camera_move(video, "spin", 0.2)
    with pytest.raises(InputError, match="between 0 and 1"):
        camera_move(video, "zoom_in", 1.5)

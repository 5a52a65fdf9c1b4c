"""DiT trainer: the three stages, inpaint mode, the pre-encoding cache, and their building blocks."""

import math

import pytest
import torch
from train_helpers import (
    dit_yaml,
    fixed_eval_loss,
    image_dit_config,
    losses,
    make_dataset,
    motion_config,
    write_models,
)

from easyanimate_core.errors import InputError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    models = write_models(root / "models")
    data = make_dataset(root / "data", videos=2, images=2, frames=12)
    one_image = make_dataset(root / "one", videos=0, images=1)
    return models, data, one_image, root


@pytest.fixture(scope="module")
def image_dit(setup):
    """A stage-1 run (also the base of the stage-2 tests): 30 steps on a single image."""
    from training.train_dit import main

    models, _, one_image, root = setup
    out = root / "dit_image"
    cfg = dit_yaml(root / "image.yaml", models, one_image, out,
                   model={"config": image_dit_config()},
                   data={"batch_size": 1, "frames": 1},
                   train={"steps": 30, "ema": False, "max_grad_norm": 0.0})
    assert main("dit-image", ["--config", cfg]) == 0
    return out


def test_dit_image_loss_goes_down(setup, image_dit):
    from easyanimate_core.models.transformer import VideoTransformer, load_transformer

    models, _, one_image, _ = setup
    torch.manual_seed(42)  # the trainer's seed: the same initial weights
    before = fixed_eval_loss(VideoTransformer.from_config(image_dit_config()), models, one_image)
    after = fixed_eval_loss(load_transformer(str(image_dit / "transformer")), models, one_image)
    assert after < 0.8 * before
    assert len(losses(image_dit, "loss/vb")) == 30   # learned-variance term is trained


def test_dit_motion_trains_only_motion_modules_and_exports_them(setup, image_dit, tmp_path):
    from safetensors.torch import load_file

    from easyanimate_core.models.transformer import load_transformer
    from training.train_dit import main

    models, data, _, _ = setup
    out = tmp_path / "motion"
    cfg = dit_yaml(tmp_path / "motion.yaml", models, data, out,
                   model={"pretrained": str(image_dit / "transformer"), "motion_config": motion_config()},
                   data={"random_frame_crop": True}, train={"steps": 3, "validation_every": 3},
                   validation={"prompts": ["a square"], "steps": 2, "width": 32, "height": 32, "frames": 8})
    assert main("dit-motion", ["--config", cfg]) == 0
    assert (out / "validation" / "step-00000003-0.mp4").stat().st_size > 0    # sampled with the pipeline
    base = load_file(image_dit / "transformer" / "diffusion_pytorch_model.safetensors")
    video = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(base[k], video[k]) for k in base)          # the image DiT is frozen
    motion = load_file(out / "motion_module.safetensors")
    assert motion and all(".attn_temporal." in k for k in motion)
    assert any(not torch.equal(motion[k], torch.zeros_like(motion[k])) for k in motion if "proj_out" in k)
    # the standalone file plugs into the image base through the public loader
    combined = load_transformer(str(image_dit / "transformer"), motion_module=str(out / "motion_module.safetensors"),
                                config=motion_config())
    exported = load_transformer(str(out / "transformer"))
    x, t, text = torch.randn(1, 4, 3, 4, 4), torch.tensor([500]), torch.randn(1, 5, 32)
    assert torch.allclose(combined(x, t, text), exported(x, t, text), atol=1e-6)
    # heads and attention types travel in the file's metadata, so "auto" needs no preset
    from easyanimate_core.models.motion_module import load_motion_module

    auto = load_motion_module(str(out / "motion_module.safetensors"), preset="auto")
    assert {k: auto.config[k] for k in motion_config()} == motion_config()


def test_dit_full_inpaint_with_clip_and_logit_normal(setup, tmp_path):
    from tiny_models import save_clip, tiny_dit_config

    from easyanimate_core.models.transformer import load_transformer
    from training.train_dit import main

    models, data, _, _ = setup
    clip = save_clip(tmp_path / "image_encoder")
    out = tmp_path / "full"
    cfg = dit_yaml(tmp_path / "full.yaml", models, data, out, model={"config": tiny_dit_config(12)},
                   mode={"train_mode": "inpaint", "clip_encoder": str(clip)},
                   data={"resolution_schedule": [[0, 32], [2, 48]], "buckets": True},
                   train={"gradient_checkpointing": True})
    assert main("dit-full", ["--config", cfg]) == 0
    assert all(math.isfinite(v) and v < 10 for v in losses(out, "loss"))
    model = load_transformer(str(out / "transformer"))
    assert model.in_channels == 12


def test_cache_is_built_once_and_reused(setup, tmp_path):
    from training.train_dit import main

    models, data, _, _ = setup
    cache = tmp_path / "cache"
    motion_model = {**image_dit_config(), **motion_config()}
    cfg = dit_yaml(tmp_path / "c.yaml", models, data, tmp_path / "out", model={"config": motion_model},
                   cache={"dir": str(cache)}, text={"caption_dropout": 0.5})
    assert main("dit-full", ["--config", cfg]) == 0
    files = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(files) == 4   # 2 videos + 2 images, one size
    assert main("dit-full", ["--config", cfg, f"train.output_dir={tmp_path / 'again'}"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == files
    # other clips (another frame stride) are new entries, never the old ones served again
    assert main("dit-full", ["--config", cfg, f"train.output_dir={tmp_path / 'stride'}", "data.stride=2"]) == 0
    assert len(list(cache.iterdir())) == 8


def test_cached_latents_are_the_vae_posterior(setup, tmp_path):
    from easyanimate_core.checkpoints import load_state_dict
    from easyanimate_core.models.vae import load_vae
    from training.cache import LatentCache
    from training.data import BatchPlan, Item, MediaDataset, load_entries

    models, data, _, _ = setup
    entries = load_entries(str(data), None)
    cfg = {"types": "both", "batch_size": 1, "sample_size": 32, "frames": 8, "stride": 1, "buckets": False,
           "random_frame_crop": False}
    plan, dataset, vae = BatchPlan(entries, cfg, 0, 8), MediaDataset(entries, cfg), load_vae(str(models / "vae"))
    cache = LatentCache(tmp_path, "id")

    def encode(video):
        posterior = vae.encode(video)
        return posterior.mean, posterior.std

    cache.build(plan, dataset, encode, lambda texts: (torch.zeros(1, 120, 32), torch.ones(1, 120)), [32])
    index = next(i for i, e in enumerate(entries) if e["type"] == "video")
    stored = load_state_dict(cache.path(entries[index], 32, 32, plan.max_frames(index)))
    pixels = dataset[Item(index, 32, 32, plan.max_frames(index), ("cache", index))]["pixels"][None]
    assert torch.allclose(stored["mean"], vae.encode(pixels).mean[0], atol=1e-6)


def test_trainable_selection_and_low_lr_group():
    from easyanimate_core.models.transformer import VideoTransformer
    from training.train_dit import select_trainable

    model = VideoTransformer.from_config({**image_dit_config(), **motion_config()})
    groups = select_trainable(model, ["attn_temporal"], ["caption_projection"], 1e-4, 0.1)
    assert [g["lr"] for g in groups] == [1e-4, pytest.approx(1e-5)]
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all("attn_temporal" in n or "caption_projection" in n for n in names)
    with pytest.raises(InputError, match="match no parameter"):
        select_trainable(model, ["no_such_layer"], [], 1e-4, 0.1)


def test_caption_padding_is_cut_without_changing_the_prediction():
    from types import SimpleNamespace

    from easyanimate_core.models.transformer import VideoTransformer
    from training.train_dit import Conditioner

    torch.manual_seed(0)
    config = {**image_dit_config(), **motion_config()}
    model = VideoTransformer.from_config(config).eval()
    mask = torch.zeros(2, 120, dtype=torch.long)
    mask[0, :5], mask[1, :9] = 1, 1
    batch = {"latent_mean": torch.randn(2, 4, 3, 4, 4), "latent_std": torch.zeros(2, 4, 3, 4, 4),
             "text_embeds": torch.randn(2, 120, config["caption_channels"]), "text_mask": mask}
    inputs = Conditioner(SimpleNamespace(scaling_factor=1.0), None, None, "cpu", False)(
        batch, torch.Generator().manual_seed(0), caption_dropout=0.0)
    assert inputs["embeds"].shape[1] == inputs["mask"].shape[1] == 9
    t = torch.tensor([500, 500])
    with torch.no_grad():
        padded = model(inputs["latents"], t, batch["text_embeds"], encoder_attention_mask=mask)
        cut = model(inputs["latents"], t, inputs["embeds"], encoder_attention_mask=inputs["mask"])
    padded, cut = (x[0] if isinstance(x, (tuple, list)) else x for x in (padded, cut))
    assert torch.allclose(padded, cut, atol=1e-5)


def test_inpaint_masks_follow_the_reference_types():
    from training.train_dit import random_generate_mask

    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        mask = random_generate_mask("video", 16, g)
        kept = (mask == 0).nonzero().flatten().tolist()
        if not kept:
            seen.add("t2v")
        elif kept[-1] == 15:
            seen.add("first+last")
            assert 1 <= len(kept) // 2 <= 4
        else:
            seen.add("first")
            assert kept == list(range(len(kept))) and 1 <= len(kept) <= 4
    assert seen == {"t2v", "first", "first+last"}
    assert bool((random_generate_mask("image", 1, g) == 1).all())


def test_configuration_errors_are_one_sentence(setup, tmp_path):
    from training.train_dit import main

    models, data, _, _ = setup
    four = dit_yaml(tmp_path / "a.yaml", models, data, tmp_path / "a", model={"config": image_dit_config()},
                    mode={"train_mode": "inpaint"})
    with pytest.raises(InputError, match="needs a 12-channel"):
        main("dit-full", ["--config", four])
    with pytest.raises(InputError, match="diffusion.timesteps: expected one of uniform, logit_normal, got 'lognormal'"):
        main("dit-full", ["--config", four, "diffusion.timesteps=lognormal"])
    with pytest.raises(InputError, match="mode.train_mode: expected one of normal, inpaint, got 'i2v'"):
        main("dit-full", ["--config", four, "mode.train_mode=i2v"])
    with pytest.raises(InputError, match="data.metadata is not set"):
        main("dit-full", ["--config", four, "mode.train_mode=normal", "data.metadata="])
    with pytest.raises(InputError, match="cache.dir cannot be used"):
        from tiny_models import tiny_dit_config
        main("dit-full", ["--config", four, f"cache.dir={tmp_path}", f"model.config={tiny_dit_config(12)}"])


@pytest.mark.parametrize("precision", ["bf16", "fp16", "no"])
def test_mixed_precision_runs_one_after_another(setup, tmp_path, precision):
    from training.train_dit import main

    models, data, _, _ = setup
    cfg = dit_yaml(tmp_path / "p.yaml", models, data, tmp_path / "out",
                   model={"config": {**image_dit_config(), **motion_config()}},
                   train={"steps": 2, "mixed_precision": precision, "gradient_checkpointing": True})
    assert main("dit-full", ["--config", cfg]) == 0
    assert all(math.isfinite(v) for v in losses(tmp_path / "out", "loss"))


def test_bad_mixed_precision_is_one_clear_error(setup, tmp_path):
    from training.train_dit import main

    models, data, _, _ = setup
    cfg = dit_yaml(tmp_path / "p.yaml", models, data, tmp_path / "out", model={"config": image_dit_config()})
    with pytest.raises(InputError, match="train.mixed_precision: expected one of no, fp16, bf16, got 'fp8'"):
        main("dit-full", ["--config", cfg, "train.mixed_precision=fp8"])


def test_hybrid_loss_vanishes_for_the_true_noise_and_posterior_variance():
    """eps = the true noise and v = -1 (the learned range's posterior end) is the exact reverse
    step: MSE and VB are zero; the other end of the range or a wrong eps costs something. (The
    same numbers as the reference's GaussianDiffusion.training_losses, checked by running it.)"""
    from training.losses import DiffusionTerms, diffusion_loss

    terms = DiffusionTerms(torch.linspace(1e-4, 0.02, 1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 4, 2, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([1, 500, 999])
    x_t = terms.add_noise(x0, noise, t)
    exact, parts = diffusion_loss(terms, torch.cat([noise, -torch.ones_like(noise)], 1), x0, x_t, noise, t)
    assert exact.abs().max() < 1e-4 and float(parts["vb"]) < 1e-4
    wide, parts = diffusion_loss(terms, torch.cat([noise, torch.ones_like(noise)], 1), x0, x_t, noise, t)
    assert wide[0] > 1e-2 and float(parts["mse"]) == 0.0   # at t = 1 the range's ends differ most
    wrong, _ = diffusion_loss(terms, torch.cat([-noise, -torch.ones_like(noise)], 1), x0, x_t, noise, t)
    assert (wrong > 1.0).all()

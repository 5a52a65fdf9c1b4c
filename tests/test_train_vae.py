"""VAE trainer: stage 1 learns, stage 2 leaves the latent space alone, outputs load, LPIPS file."""

import itertools

import pytest
import torch
from train_helpers import losses, make_dataset, vae_config, vae_yaml

from easyanimate_core.errors import CheckpointError, InputError


def _config(tmp_path, meta, **train):
    return vae_yaml(tmp_path / "vae.yaml", meta, tmp_path / "out", data={"batch_size": 2},
                    train={"lr": 2e-3, **train})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), videos=2, images=2, corrupt=1)


def test_stage1_loss_decreases_and_exports_loadable_vae(tmp_path, dataset, capsys):
    from easyanimate_core.models.vae import load_vae
    from training.train_vae import main

    # one image, so every batch is the same picture (random crops aside): a fixed batch
    one = make_dataset(tmp_path / "one", videos=0, images=1)
    cfg = _config(tmp_path, one, steps=25, ema=False)
    assert main("vae", ["--config", cfg, "data.batch_size=1", "loss.disc_start=100"]) == 0
    rec = losses(tmp_path / "out", "loss/rec")
    assert len(rec) == 25
    assert sum(rec[-5:]) / 5 < 0.7 * sum(rec[:5]) / 5
    assert "perceptual (LPIPS) term is off" in capsys.readouterr().out
    vae = load_vae(str(tmp_path / "out" / "vae"))
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    assert vae.decode(vae.encode(video).mode()).shape == video.shape
    assert (tmp_path / "out" / "loss_curve.png").stat().st_size > 1000
    assert not list((tmp_path / "out").rglob("*.tmp"))   # config.json and the CSV are renamed into place


def test_gan_terms_start_at_disc_start_and_bad_samples_are_skipped(tmp_path, dataset, capsys):
    from training.train_vae import main

    assert main("vae", ["--config", _config(tmp_path, dataset)]) == 0
    assert len(losses(tmp_path / "out", "loss/d")) == 1           # step 4 only (disc_start 3)
    assert len(losses(tmp_path / "out", "d_weight")) == 1


def test_learning_rate_follows_the_schedule(tmp_path, dataset):
    from training.train_vae import main

    cfg = _config(tmp_path, dataset, steps=8, lr_schedule="cosine", warmup_steps=2, log_every=1)
    assert main("vae", ["--config", cfg, "loss.disc_start=100"]) == 0
    lr = losses(tmp_path / "out", "lr")  # logged before each step's scheduler update
    assert lr[:3] == pytest.approx([1e-3, 2e-3, 2e-3])
    assert all(a > b for a, b in itertools.pairwise(lr[2:])) and lr[-1] < 0.1 * lr[2]


def test_stage2_trains_decoder_only(tmp_path, dataset):
    from safetensors.torch import load_file

    from training.train_vae import main

    start = tmp_path / "start"
    assert main("vae", ["--config", _config(tmp_path, dataset), f"train.output_dir={start}", "train.steps=1"]) == 0
    before = load_file(start / "vae" / "diffusion_pytorch_model.safetensors")
    assert main("vae-decoder", ["--config", _config(tmp_path, dataset), "model.config={}",
                                f"model.pretrained={start / 'vae'}", "train.ema=false"]) == 0
    after = load_file(tmp_path / "out" / "vae" / "diffusion_pytorch_model.safetensors")
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in before if k.startswith("decoder.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    # stage 2 defaults follow EasyAnimate's decoder stage: L2 instead of L1
    from training.options import defaults_of
    from training.train_vae import command_options

    assert defaults_of(command_options("vae-decoder"))["loss"]["l2_weight"] == 1.0
    assert defaults_of(command_options("vae-decoder"))["loss"]["l1_weight"] == 0.0


@pytest.mark.parametrize("slice_mode", [True, False])
def test_inflated_vae_is_its_image_model_run_frame_by_frame(slice_mode):
    """After inflate_from_stills only the tap a still reaches is left in every temporal kernel (the
    centre in slice mode, the newest in causal mode, holding the sum of the taps), a still encodes
    as before, and a clip holding that still for 9 frames encodes to the still's latent in every
    latent frame and decodes to its decoding in every frame."""
    from easyanimate_core.models.vae import VideoVAE
    from easyanimate_core.models.vae.layers import CausalConv3d
    from training.train_vae import inflate_from_stills

    torch.manual_seed(0)
    vae = VideoVAE.from_config({**vae_config(), "slice_compression_vae": slice_mode}).eval()
    still = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    clip = still.expand(-1, -1, 9, -1, -1)
    with torch.no_grad():
        z_still = vae.encode(still).mode()
        if slice_mode:  # zero-padded random taps see the clip's other frames: not the still's latent
            random_taps = vae.encode(clip).mode()
            assert not torch.allclose(random_taps, z_still.expand_as(random_taps), atol=1e-3)
        inflate_from_stills(vae)
        kept = 1 if slice_mode else 2
        convs = [m for m in vae.modules() if isinstance(m, CausalConv3d)]
        assert convs and all(not c.weight[:, :, [t for t in range(3) if t != kept]].any() for c in convs)
        torch.testing.assert_close(vae.encode(still).mode(), z_still)
        latents = vae.encode(clip).mode()
        assert latents.shape[2] == 3
        torch.testing.assert_close(latents, z_still.expand_as(latents))
        frames = vae.decode(latents)
        torch.testing.assert_close(frames, vae.decode(z_still).expand_as(frames))


def test_unknown_option_is_one_clear_error(tmp_path, dataset):
    from training.train_vae import main

    with pytest.raises(InputError, match="unknown option 'train.stpes'"):
        main("vae", ["--config", _config(tmp_path, dataset), "train.stpes=3"])
    with pytest.raises(InputError, match="not of the form key=value"):
        main("vae", ["--config", _config(tmp_path, dataset), "steps"])
    with pytest.raises(InputError, match=r"train.log_every: expected a whole number >= 1, got 0 \(in command line\)"):
        main("vae", ["--config", _config(tmp_path, dataset), "train.log_every=0"])
    with pytest.raises(InputError, match="gradient_accumulation_steps=1"):
        main("vae", ["--config", _config(tmp_path, dataset), "train.gradient_accumulation_steps=2"])
    with pytest.raises(InputError, match="data.crop: expected one of random_square, center, got 'zoom'"):
        main("vae", ["--config", _config(tmp_path, dataset), "data.crop=zoom"])


def _lpips_state(layout):
    from training.perceptual import LPIPS

    torch.manual_seed(0)
    state = {}
    for key, value in LPIPS().state_dict().items():
        if key.startswith("features."):
            index, kind = key.split(".")[1:]
            name = f"features.{index}.{kind}" if layout == "torchvision" else f"net.slice1.{index}.{kind}"
            state[name] = torch.randn_like(value) * 0.05
        elif key.startswith("lin."):
            state[f"lin{key.split('.')[1]}.model.1.weight"] = torch.rand_like(value)
    return state


@pytest.mark.parametrize("layout", ["lpips", "torchvision"])
def test_perceptual_weights_from_a_local_file(tmp_path, layout):
    from safetensors.torch import save_file

    from training.perceptual import load_lpips

    path = tmp_path / "lpips.safetensors"
    save_file(_lpips_state(layout), str(path))
    net = load_lpips(str(path))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert net(x, x).abs().max() < 1e-6
    assert (net(x, x.flip(-1)) > 0).all()


def test_perceptual_file_missing_tensors_is_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    from training.perceptual import load_lpips

    state = _lpips_state("lpips")
    state.pop("lin4.model.1.weight")
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="lacks 1 of the VGG16/LPIPS tensors"):
        load_lpips(str(tmp_path / "partial.safetensors"))


def test_discriminators_judge_real_and_fake_batches_separately():
    """BatchNorm in the PatchGAN sees real and fake clips apart (taming runs them one at a time):
    a fake batch scores the same passed with the real one as alone."""
    from training.discriminators import VideoDiscriminators

    torch.manual_seed(0)
    discs = VideoDiscriminators(8, 2, [8, 8]).train()
    real = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    fake = torch.rand(1, 3, 5, 32, 32) * 0.2
    (real_2d, real_3d), (fake_2d, fake_3d) = discs(real, fake)
    [(alone_2d, alone_3d)] = discs(fake)
    assert real_2d.shape == (5, 1, 6, 6) and real_3d.shape[0] == 1
    assert torch.allclose(fake_2d, alone_2d, atol=1e-6) and torch.allclose(fake_3d, alone_3d, atol=1e-6)
    mixed = discs.d2d(torch.cat([real, fake]).transpose(1, 2).flatten(0, 1))[5:]
    assert not torch.allclose(mixed, alone_2d, atol=1e-3)   # what a shared batch would have given


def test_edge_term_weighs_a_blurred_edge_not_a_flat_shift():
    """The edge term is zero for an error that is the same everywhere (a colour shift) and adds to
    the NLL where the reconstruction softens an edge."""
    from training.losses import VAELoss, spatial_gradient_l1

    video = -torch.ones(1, 3, 2, 8, 8)
    video[..., :, 4:] = 1                                      # a vertical edge
    shifted = video + 0.1
    blurred = video.clone()
    blurred[..., :, 3:5] = 0                                   # the edge smeared over two columns
    assert spatial_gradient_l1(video - shifted).abs().max() == 0
    assert spatial_gradient_l1(video - blurred)[..., :, 2:5].gt(0).all()

    plain, edge = VAELoss(l2_weight=1.0), VAELoss(l2_weight=1.0, edge_weight=3.0)
    assert torch.allclose(edge.nll(video, shifted)[0], plain.nll(video, shifted)[0])
    assert edge.nll(video, blurred)[0] > plain.nll(video, blurred)[0] + 1

"""Slice-VAE training (EasyAnimate's two stages: whole model, then decoder only).

    python training/run.py vae          --config training/configs/vae.yaml [key=value ...]
    python training/run.py vae-decoder  --config training/configs/vae_decoder.yaml

Stage 1 (``vae``) trains the whole autoencoder on images and clips; stage 2 (``vae-decoder``)
freezes the encoder and ``quant_conv`` so the latent space stays exactly as it is, and trains the
decoder (with ``post_quant_conv``) for fidelity. Loss: Gaussian NLL of L1/L2 + LPIPS with a
learned log-variance, KL, and from ``disc_start`` on a hinge GAN with a per-frame PatchGAN and a
3D clip discriminator, its weight balanced against the NLL at the decoder's last layer. Adam
(0.5, 0.9). The EMA weights are exported as a released ``vae/`` folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from easyanimate_core.errors import InputError
from training import data as data_lib
from training.config import parse_args
from training.ema import EMA, final_weights
from training.loop import LOOP_OPTIONS, LR_SCHEDULES, clip_gradients, fused_adam, lr_schedule, make_accelerator, train
from training.options import (
    Opt,
    choice,
    either,
    flag,
    free,
    from_config,
    listof,
    number,
    path,
    text,
    whole,
    with_defaults,
)
from training.loop import export_model_folder as export_vae  # the name training/demo imports

OPTIONS = {
    "train": {**LOOP_OPTIONS,
              "output_dir": Opt("outputs/vae", path(), "folder for checkpoints, logs and the exported vae/"),
              "lr": Opt(1e-4, number(0, low_open=True), "learning rate of the autoencoder (Adam)"),
              "betas": Opt([0.5, 0.9], listof(number(0, 1, high_open=True), length=2), "Adam betas (both optimizers)"),
              "lr_schedule": Opt("constant", choice(*LR_SCHEDULES), "learning-rate schedule (loop.lr_schedule)"),
              "warmup_steps": Opt(0, whole(), "steps of linear lr warm-up"),
              # the reference does not clip the VAE
              "max_grad_norm": Opt(0.0, number(0), "adaptive gradient clipping threshold (loop.clip_gradients); 0: off"),
              "ema": Opt(True, flag(), "keep an EMA of the weights and export it"),
              "ema_decay": Opt(0.9999, number(0, 1, high_open=True), "EMA decay"),
              "num_workers": Opt(0, whole(), "data-loading worker processes")},
    "model": {"pretrained": Opt("", path(), "released vae/ folder or weights file to start from"),
              "config": free("VAE config (reference key names) when not pretrained, or keys overriding it"),
              "decoder_only": Opt(False, flag(), "stage 2: freeze the encoder and quant_conv"),
              "inflate": Opt(False, flag(), "pretrained was trained on stills: start as that image autoencoder "
                                            "applied per frame (inflate_from_stills)"),
              "last_layer": Opt("decoder.conv_out.weight", text(), "parameter where the adaptive GAN weight looks")},
    "loss": {"l1_weight": Opt(1.0, number(0), "weight of the L1 reconstruction term"),
             "l2_weight": Opt(0.0, number(0), "weight of the L2 reconstruction term"),
             "perceptual_weight": Opt(1.0, number(0), "weight of the LPIPS term (needs perceptual_weights)"),
             "perceptual_weights": Opt("", path(), "local LPIPS/VGG16 weights file; empty: perceptual term off"),
             "edge_weight": Opt(0.0, number(0), "L1 on the residual's spatial gradient (losses.spatial_gradient_l1)"),
             "kl_weight": Opt(1e-6, number(0), "weight of the KL term"),
             "disc_weight": Opt(0.5, number(0), "weight of the GAN term (before adaptive balancing)"),
             "disc_start": Opt(50001, whole(), "step at which the discriminators and the GAN term start"),
             "disc_lr": Opt(1e-4, number(0, low_open=True), "learning rate of the discriminators"),
             "disc_2d_channels": Opt(64, whole(1), "channels of the per-frame PatchGAN"),
             "disc_2d_layers": Opt(3, whole(1), "layers of the per-frame PatchGAN"),
             "disc_3d_channels": Opt([64, 128, 256], listof(whole(1), min_length=1), "channels of the 3D clip "
                                                                                      "discriminator")},
    "data": {"metadata": Opt("", path(), "metadata JSON of the dataset (preprocess metadata writes it)"),
             "root": Opt("", path(), "folder the metadata's relative paths start from"),
             "types": Opt("both", choice("image", "video", "both"), "which samples train (never mixed in a batch)"),
             "batch_size": Opt(1, whole(1), "samples per batch and process"),
             "sample_size": Opt(256, whole(8, multiple=8), "training resolution (pixels)"),
             "frames": Opt(25, whole(1), "frames per clip; 25 = 1 + 3 x 8: lone first frame + three slices"),
             "stride": Opt(1, either(whole(1), listof(whole(1), min_length=1)),
                           "frame step within a clip; a list: each clip draws one"),
             "buckets": Opt(False, flag(), "aspect-ratio and frame-count buckets"),
             "random_frame_crop": Opt(False, flag(), "sometimes train on a shorter clip"),
             # random zoom crops are the reference's; center suits data whose objects are small in frame
             "crop": Opt("random_square", choice("random_square", "center"), "how a training crop is cut"),
             "memory_cache_mb": Opt(0.0, number(0), "keep decoded videos in RAM up to this many MiB")},
}

STAGE_DEFAULTS = {
    "vae": {},
    "vae-decoder": {"model": {"decoder_only": True}, "loss": {"l1_weight": 0.0, "l2_weight": 1.0},
                    "train": {"output_dir": "outputs/vae_decoder"}},
}


def command_options(command: str) -> dict:
    return with_defaults(OPTIONS, STAGE_DEFAULTS[command])



class Autoencode(nn.Module):
    """encode -> sample -> decode as one forward, so DDP sees one call per step."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, video, noise_seed: int):
        posterior = self.vae.encode(video.contiguous(memory_format=torch.channels_last_3d))
        generator = torch.Generator(device=video.device).manual_seed(noise_seed)
        latents = posterior.sample(generator=generator)
        recon = self.vae.decode(latents)
        return recon, posterior.kl()


def build_vae(model_cfg: dict):
    from easyanimate_core.models.vae import VideoVAE, load_vae

    if model_cfg["pretrained"]:
        vae = load_vae(model_cfg["pretrained"], dtype=torch.float32)
    elif model_cfg["config"]:
        vae = from_config(VideoVAE, model_cfg["config"], "model.config", "a released vae/config.json")
    else:
        raise InputError("the VAE trainer needs model.pretrained (a vae/ folder or file) or "
                         "model.config (a VAE config dict); set one of them.")
    if model_cfg["inflate"]:
        inflate_from_stills(vae)
    if model_cfg["decoder_only"]:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    return vae


def inflate_from_stills(vae) -> None:
    """Turn a VAE trained on stills into that image autoencoder applied frame by frame, the way
    MagViT-v2 inflates a 2-D VAE (the released VAE began as Stable Diffusion's image VAE).

    A still reaches each k_t = 3 kernel through one tap in slice mode (zero temporal padding: the
    centre) and through all taps in causal mode (replicated padding: their sum). That 2-D kernel
    goes to the centre tap (slice) or the newest tap (causal) and the other taps become zero, so
    stills encode exactly as before and clips start from a per-frame model whose temporal
    down-samplers pick frames, instead of from random temporal taps. On the demo world this
    reached 28.0 dB after 6000 still + 2000 clip steps, against 25.8 dB after 5000 clip steps
    from scratch in more time."""
    from easyanimate_core.models.vae.layers import CausalConv3d

    with torch.no_grad():
        for conv in vae.modules():
            if not isinstance(conv, CausalConv3d) or conv.weight.shape[2] == 1:
                continue
            taps = conv.weight.shape[2]
            still = conv.weight[:, :, taps // 2].clone() if vae.slice_mode else conv.weight.sum(2)
            conv.weight.zero_()
            conv.weight[:, :, taps // 2 if vae.slice_mode else -1] = still


def build_perceptual(loss_cfg: dict, accelerator):
    if loss_cfg["perceptual_weight"] <= 0:
        return None
    if not loss_cfg["perceptual_weights"]:
        accelerator.print("note: loss.perceptual_weights is not set, so the perceptual (LPIPS) term is "
                          "off; give a local LPIPS/VGG16 weights file to turn it on.")
        return None
    from training.perceptual import load_lpips

    return load_lpips(loss_cfg["perceptual_weights"])


def main(command: str, argv) -> int:
    from training.discriminators import VideoDiscriminators
    from training.losses import VAELoss, adaptive_weight, generator_adversarial, hinge_discriminator

    cfg, resume = parse_args(command, argv, command_options(command), __doc__.split("\n\n")[0])
    tcfg, mcfg, lcfg, dcfg = cfg["train"], cfg["model"], cfg["loss"], cfg["data"]
    accelerator = make_accelerator(tcfg)
    if getattr(accelerator.state, "deepspeed_plugin", None) is not None:
        raise InputError("the VAE trainer trains two models with two optimizers (autoencoder and GAN "
                         "discriminators), which accelerate's DeepSpeed mode does not take; launch it with "
                         "plain DDP (accelerate launch --multi_gpu) instead.")
    if tcfg["gradient_accumulation_steps"] != 1:
        raise InputError("the VAE trainer steps its two optimizers every batch; set "
                         "train.gradient_accumulation_steps=1 and raise data.batch_size instead.")
    torch.manual_seed(tcfg["seed"])  # identical initial weights on every rank

    # channels-last 3D convolutions run a VAE step 1.4-1.6x faster on CPU (bench/bench_vae_train.py);
    # the layout is internal: exports and checkpoints hold the same values
    vae = build_vae(mcfg).to(memory_format=torch.channels_last_3d)
    discs = VideoDiscriminators(lcfg["disc_2d_channels"], lcfg["disc_2d_layers"], lcfg["disc_3d_channels"])
    loss_fn = VAELoss(lcfg["l1_weight"], lcfg["l2_weight"], lcfg["perceptual_weight"], lcfg["edge_weight"])
    perceptual = build_perceptual(lcfg, accelerator)
    params = dict(vae.named_parameters())
    if mcfg["last_layer"] not in params:
        raise InputError(f"model.last_layer {mcfg['last_layer']!r} is not a parameter of the VAE; "
                         f"name the decoder's output convolution weight.")
    ae = Autoencode(vae)
    trainable = [p for p in vae.parameters() if p.requires_grad] + [loss_fn.logvar]
    opt_ae = torch.optim.Adam(trainable, lr=tcfg["lr"], betas=tuple(tcfg["betas"]),
                              fused=fused_adam(trainable))
    opt_d = torch.optim.Adam(discs.parameters(), lr=lcfg["disc_lr"], betas=tuple(tcfg["betas"]),
                             fused=fused_adam(discs.parameters()))
    # stepped by the loop's step count, outside accelerate (as in the DiT trainer)
    scheduler = lr_schedule(opt_ae, tcfg["lr_schedule"], tcfg["warmup_steps"], tcfg["steps"])
    ema = EMA(vae, tcfg["ema_decay"]) if tcfg["ema"] else None

    entries = data_lib.load_entries(dcfg["metadata"], dcfg["root"])
    plan = data_lib.BatchPlan(entries, dcfg, tcfg["seed"], interval=vae.mini_batch_encoder,
                              rank=accelerator.process_index, world_size=accelerator.num_processes)
    dataset = data_lib.MediaDataset(entries, dcfg, crop=dcfg["crop"])
    stream = data_lib.BatchStream(plan, dataset, tcfg["num_workers"])

    ae, discs, opt_ae, opt_d = accelerator.prepare(ae, discs, opt_ae, opt_d)
    loss_fn.to(accelerator.device)
    if perceptual is not None:
        perceptual.to(accelerator.device)
    plain_discs = accelerator.unwrap_model(discs)
    last_layer = dict(accelerator.unwrap_model(ae).vae.named_parameters())[mcfg["last_layer"]]

    def step_fn(batch, step, generator):
        video = batch["pixels"].to(accelerator.device)
        gan_on = step >= lcfg["disc_start"]
        seed = int(torch.randint(2**62, (), generator=generator))
        with accelerator.autocast():
            recon, kl = ae(video, seed)
            nll, rec = loss_fn.nll(video, recon.float(), perceptual)
            kl = kl.float().sum() / video.shape[0]
            loss = nll + lcfg["kl_weight"] * kl
            logs = {"loss/nll": nll.detach(), "loss/rec": rec, "loss/kl": kl.detach(),
                    "logvar": loss_fn.logvar.detach(), "lr": scheduler.get_last_lr()[0]}
            if gan_on:
                plain_discs.requires_grad_(False)
                g_loss = generator_adversarial(*plain_discs(recon)[0])
                plain_discs.requires_grad_(True)
                d_weight = adaptive_weight(nll, g_loss, last_layer, lcfg["disc_weight"])
                loss = loss + d_weight * g_loss
                logs.update({"loss/g": g_loss.detach(), "d_weight": d_weight})
        accelerator.backward(loss)
        if accelerator.num_processes > 1:  # logvar lives outside the DDP-wrapped module
            loss_fn.logvar.grad = accelerator.reduce(loss_fn.logvar.grad, "mean")
        clip_gradients(accelerator, trainable, step, tcfg["max_grad_norm"])
        opt_ae.step()
        scheduler.step()
        opt_ae.zero_grad(set_to_none=True)
        if gan_on:
            with accelerator.autocast():
                (real_2d, real_3d), (fake_2d, fake_3d) = discs(video, recon.detach())
                d_loss = hinge_discriminator(real_2d, fake_2d, real_3d, fake_3d)
            accelerator.backward(d_loss)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            logs["loss/d"] = d_loss.detach()
        if ema is not None:
            ema.update(accelerator.unwrap_model(ae).vae)
        logs["loss/total"] = loss.detach()
        return logs

    def export():
        export_vae(final_weights(accelerator.unwrap_model(ae).vae, ema), Path(tcfg["output_dir"]) / "vae")

    def validate(step):
        from easyanimate_core.video_io import write_video

        planned = plan.epoch_batches(0)
        first = next((b for b in planned if entries[b[0].index]["type"] == "video"), planned[0])[:1]
        video = data_lib.collate([dataset[item] for item in first])["pixels"].to(accelerator.device)
        model = accelerator.unwrap_model(ae).vae
        with torch.no_grad():
            recon = model.decode(model.encode(video).mode()).clamp(-1, 1)
        psnr = 10 * torch.log10(4.0 / (video - recon).pow(2).mean())
        pair = torch.cat([video, recon], dim=-1)[0]  # side by side: input | reconstruction
        frames = ((pair.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().cpu().numpy()
        out = write_video(Path(tcfg["output_dir"]) / "validation" / f"step-{step:08d}.mp4", frames, fps=8)
        accelerator.print(f"validation step {step}: PSNR {float(psnr):.2f} dB -> {out}")

    objects = [loss_fn, scheduler] + ([ema] if ema is not None else [])
    train(accelerator, tcfg, stream, step_fn, checkpoint_objects=objects, export=export,
          validate=validate, resume=resume, models=[ae, discs])
    return 0

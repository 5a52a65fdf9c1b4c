"""Slice-VAE training (spec 3.1).

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
from training.config import parse_args, with_overrides
from training.ema import EMA, final_weights
from training.loop import LOOP_DEFAULTS, clip_gradients, fused_adam, lr_schedule, make_accelerator, train
from training.loop import export_model_folder as export_vae  # the name training/demo imports

DEFAULTS = {
    "train": {**LOOP_DEFAULTS,
              "output_dir": "outputs/vae",
              "lr": 1e-4,
              "betas": [0.5, 0.9],
              "lr_schedule": "constant",   # or constant_with_warmup, cosine (loop.lr_schedule)
              "warmup_steps": 0,
              "max_grad_norm": 0.0,        # 0: no clipping (the reference does not clip the VAE); else
                                           # the DiT's adaptive rule (loop.clip_gradients)
              "ema": True,
              "ema_decay": 0.9999,
              "num_workers": 0},
    "model": {"pretrained": "",            # released vae/ folder or weights file to start from
              "config": {},                # VAE config (reference key names) when not pretrained
              "decoder_only": False,       # stage 2: freeze encoder + quant_conv
              "inflate": False,            # pretrained was trained on stills only: start video
                                           # training as that image autoencoder (inflate_from_stills)
              "last_layer": "decoder.conv_out.weight"},  # the adaptive GAN weight looks here
    "loss": {"l1_weight": 1.0, "l2_weight": 0.0,
             "perceptual_weight": 1.0,
             "perceptual_weights": "",     # local LPIPS/VGG16 file; empty: perceptual term off
             "edge_weight": 0.0,           # L1 on the residual's spatial gradient (losses.spatial_gradient_l1)
             "kl_weight": 1e-6,
             "disc_weight": 0.5,
             "disc_start": 50001,          # discriminators (and the GAN term) start at this step
             "disc_lr": 1e-4,
             "disc_2d_channels": 64, "disc_2d_layers": 3,
             "disc_3d_channels": [64, 128, 256]},
    "data": {"metadata": "", "root": "",
             "types": "both",              # image | video | both (never mixed within a batch)
             "batch_size": 1,
             "sample_size": 256,
             "frames": 25,                 # 25 = 1 + 3 x 8: lone first frame + three slices
             "stride": 1,                  # frame step within a clip; a list: each clip draws one
             "buckets": False,
             "random_frame_crop": False,
             "crop": "random_square",      # random zoom crops (the reference's); "center" keeps the
                                           # whole frame, for data whose objects are small in frame
             "memory_cache_mb": 0},        # keep decoded videos in RAM up to this size (data.MediaDataset)
}

STAGE_DEFAULTS = {
    "vae": {},
    "vae-decoder": {"model": {"decoder_only": True}, "loss": {"l1_weight": 0.0, "l2_weight": 1.0},
                    "train": {"output_dir": "outputs/vae_decoder"}},
}


def command_defaults(command: str) -> dict:
    return with_overrides(DEFAULTS, STAGE_DEFAULTS[command])


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
        vae = VideoVAE.from_config(dict(model_cfg["config"]))
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

    cfg, resume = parse_args(command, argv, command_defaults(command), __doc__.split("\n\n")[0])
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

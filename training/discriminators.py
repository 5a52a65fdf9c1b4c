"""The two VAE discriminators of EasyAnimate's slice-VAE training.

* :class:`PatchDiscriminator2D`: the PatchGAN of pix2pix / taming (``n_layers`` strided 4x4 convs
  with BatchNorm and LeakyReLU 0.2), applied to every frame as an image.
* :class:`Discriminator3D`: residual 3D blocks (GroupNorm 32, LeakyReLU 0.2, blur-pooled 2x
  down-sampling in time and space) over whole clips.

Both return a map of real/fake logits; the loss is the hinge loss on their means.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator2D(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, n_layers + 1):
            out = channels * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for module in self.modules():  # the DCGAN initialisation taming uses
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        return self.net(x)


class BlurPool3D(nn.Module):
    """Anti-aliased 2x down-sampling: a fixed separable [1, 3, 3, 1] blur, stride 2 in T, H, W."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = taps[:, None, None] * taps[None, :, None] * taps[None, None, :]
        self.register_buffer("kernel", (kernel / kernel.sum()).expand(channels, 1, 4, 4, 4).clone(),
                             persistent=False)
        self.channels = channels

    def forward(self, x):
        x = F.pad(x, (1, 2, 1, 2, 1, 2), mode="replicate")
        return F.conv3d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


class Block3D(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: bool):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(32, cin), cin)
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.down = BlurPool3D(cout) if downsample else nn.Identity()
        self.norm2 = nn.GroupNorm(min(32, cout), cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.shortcut = nn.Sequential(BlurPool3D(cin) if downsample else nn.Identity(), nn.Conv3d(cin, cout, 1))

    def forward(self, x):
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        h = self.conv2(self.down(F.leaky_relu(self.norm2(h), 0.2)))
        return (h + self.shortcut(x)) / math.sqrt(2)   # keeps the residual sum's variance at 1


class Discriminator3D(nn.Module):
    def __init__(self, in_channels: int = 3, block_channels=(64, 128, 256)):
        super().__init__()
        self.conv_in = nn.Conv3d(in_channels, block_channels[0], 3, stride=2, padding=1)
        widths = [block_channels[0], *block_channels]
        self.blocks = nn.Sequential(*[Block3D(widths[i], widths[i + 1], i < len(block_channels) - 1)
                                      for i in range(len(block_channels))])
        self.conv_out = nn.Conv3d(block_channels[-1], 1, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.blocks(self.conv_in(x)))


class VideoDiscriminators(nn.Module):
    """Both discriminators as one module, so they train with one optimizer and one DDP wrapper."""

    def __init__(self, channels_2d: int = 64, layers_2d: int = 3, channels_3d=(64, 128, 256)):
        super().__init__()
        self.d2d = PatchDiscriminator2D(3, channels_2d, layers_2d)
        self.d3d = Discriminator3D(3, tuple(channels_3d))

    def forward(self, *videos):
        """``[(per-frame 2D logits, whole-clip 3D logits)]``, one pair per clip batch
        (B, 3, F, H, W). Real and fake batches are passed together (one call, as DDP wants) but
        run separately, so the 2D discriminator's BatchNorm never mixes their statistics (as in
        taming, where each goes through the discriminator on its own)."""
        return [(self.d2d(video.transpose(1, 2).flatten(0, 1)), self.d3d(video)) for video in videos]

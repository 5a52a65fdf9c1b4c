"""LPIPS-style perceptual distance (VGG16 features + learned 1x1 channel weights).

No weights are downloaded: the user points ``perceptual_weights`` at one local file that holds the
VGG16 convolution weights and the five linear-layer weights. Accepted key layouts (safetensors or
a ``torch.load(weights_only=True)`` file):

* the ``lpips`` package network: ``net.slice{1..5}.{i}.weight/bias`` and ``lin{0..4}.model.1.weight``
* torchvision VGG16 + LPIPS lins: ``features.{i}.weight/bias`` and ``lin{0..4}.model.1.weight``

``i`` is the layer index inside torchvision's ``vgg16().features`` in both layouts.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from easyanimate_core.errors import CheckpointError

# torchvision vgg16 "features": conv layers at these indices, LPIPS taps after relu1_2 ... relu5_3
_VGG_LAYOUT = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
               (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
               (26, 512, 512), (28, 512, 512)]
_POOL_AFTER = {2, 7, 14, 21}   # conv index whose ReLU is followed by max-pooling
_TAPS = {2: 0, 7: 1, 14: 2, 21: 3, 28: 4}
_TAP_CHANNELS = [64, 128, 256, 512, 512]


class LPIPS(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.ModuleDict({str(i): nn.Conv2d(cin, cout, 3, padding=1)
                                       for i, cin, cout in _VGG_LAYOUT})
        self.lin = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in _TAP_CHANNELS])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def _taps(self, x):
        x = (x - self.shift) / self.scale
        taps = []
        for i, _, _ in _VGG_LAYOUT:
            x = torch.relu(self.features[str(i)](x))
            if i in _TAPS:
                taps.append(x)
            if i in _POOL_AFTER:
                x = nn.functional.max_pool2d(x, 2)
        return taps

    def forward(self, x, y):
        """Per-image distance (N, 1, 1, 1) between images in [-1, 1]."""
        total = 0
        for lin, fx, fy in zip(self.lin, self._taps(x), self._taps(y)):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy) ** 2).mean((2, 3), keepdim=True)
        return total


def _rename(key: str):
    match = re.fullmatch(r"(?:net\.slice\d\.|features\.)(\d+)\.(weight|bias)", key)
    if match:
        return f"features.{match[1]}.{match[2]}"
    match = re.fullmatch(r"lins?\.?(\d)\.model\.1\.weight", key)
    if match:
        return f"lin.{match[1]}.weight"
    return None


def load_lpips(path: str) -> LPIPS:
    from easyanimate_core.checkpoints import load_state_dict

    raw = load_state_dict(path)
    state = {}
    for key, value in raw.items():
        name = _rename(key)
        if name is not None:
            state[name] = value.float()
    model = LPIPS()
    expected = {k for k in model.state_dict() if k not in ("shift", "scale")}
    missing = sorted(expected - set(state))
    if missing:
        raise CheckpointError(f"perceptual weights file {path} lacks {len(missing)} of the VGG16/LPIPS "
                              f"tensors (first: {missing[0]}); give a file with the lpips package's "
                              f"net.slice*/lin* keys or torchvision's features.* plus lin*.model.1.weight.")
    model.load_state_dict(state, strict=False)
    return model.eval()

"""Exponential moving average of the trainable parameters.

The shadow copy is fp32 whatever the training precision, and it follows only parameters that
train (a frozen base would just be a second copy of itself). The decay ramps up as
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not dominated by
the random or pre-trained start.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().float().clone()
                       for name, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        names, params = zip(*[(name, p.detach()) for name, p in model.named_parameters() if name in self.shadow])
        if self.shadow[names[0]].device != params[0].device:
            # the trainers make the EMA before accelerate moves the model to its device, and a
            # resumed state loads onto the CPU: the shadow follows the weights once, not every step
            self.shadow = {name: self.shadow[name].to(p.device) for name, p in zip(names, params)}
        torch._foreach_lerp_([self.shadow[name] for name in names], [p.float() for p in params], 1.0 - decay)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name].to(p.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.shadow = {name: tensor.float() for name, tensor in state["shadow"].items()}


def final_weights(model: nn.Module, ema: EMA | None) -> nn.Module:
    """The model a run exports: an fp32 copy holding the EMA weights when there is an EMA."""
    final = copy.deepcopy(model).float()
    if ema is not None:
        ema.copy_to(final)
    return final

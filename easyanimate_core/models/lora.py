"""The LoRA family, one mechanism: a low-rank update dW = strength * scale * up @ down on chosen
Linear layers of the DiT.

What differs between the published kinds is only which layers a file may touch and where its
scale comes from (key formats are normalised by :mod:`easyanimate_core.checkpoints`):

    kind             targets                                          file layouts
    "lora"           any Linear of the transformer                    kohya (EasyAnimate), PEFT
    "motion_lora"    motion-module attention q/k/v/out only           AnimateDiff processor, kohya, PEFT
    "domain_adapter" image attention (attn1/attn2) q/k/v/out only     AnimateDiff processor, kohya, PEFT

Two ways to put loaded LoRAs on a model, both removable bit-for-bit:

- merged (default for float weights): each target weight is replaced by a new tensor
  W + sum_i dW_i computed in float32; the original Parameter object is kept and put back on
  removal, so nothing drifts however often LoRAs are applied and removed;
- runtime (fp8-stored weights, or on request): an adapter is appended to the layer's
  ``adapters`` list and adds ``strength * scale * up(down(x))`` in the forward.

Training uses runtime adapters with trainable ``down`` (Kaiming-uniform) and ``up`` (zero, so the
model starts unchanged): :func:`add_trainable_lora` / :func:`trainable_lora_state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError
from .layers import Linear

LORA_KINDS = ("lora", "motion_lora", "domain_adapter")
TRAIN_TARGETS = ("all", "motion", "spatial_attention")
_ATTENTION_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


# ----- which layers --------------------------------------------------------------------------------

def is_motion_attention(name: str) -> bool:
    return ".attn_temporal." in name and ".attention_blocks." in name and name.endswith(_ATTENTION_LEAVES)


def is_spatial_attention(name: str) -> bool:
    return (".attn1." in name or ".attn2." in name) and name.endswith(_ATTENTION_LEAVES)


def _allowed(kind: str):
    return {"lora": lambda name: True, "motion_lora": is_motion_attention, "domain_adapter": is_spatial_attention,
            "all": lambda name: True, "motion": is_motion_attention, "spatial_attention": is_spatial_attention}[kind]


def linear_layers(module: nn.Module, prefix: str = "") -> dict[str, Linear]:
    """{dotted name: layer} of every adaptable Linear (names as in the transformer's state dict)."""
    return {prefix + name: m for name, m in module.named_modules() if isinstance(m, Linear)}


# ----- loaded LoRA files ----------------------------------------------------------------------------

@dataclass(eq=False)
class LoraWeights:
    """A LoRA file resolved against a model: {module name: LoraPair(down, up, scale)}."""
    pairs: dict
    kind: str
    source: str
    format: str = ""
    notes: list = field(default_factory=list)


def load_lora(source, layers: dict[str, Linear], kind: str = "lora", adapter_config: dict | None = None,
              name: str | None = None) -> LoraWeights:
    """Read a LoRA file (or state dict) and resolve it against ``layers`` (see :func:`linear_layers`;
    for a MotionLoRA, the layers of the motion modules it will modify).

    Every LoRA key must name a layer of the right kind: keys that match nothing, a file that
    touches layers its kind may not, and shape mismatches are errors (text-encoder keys of
    kohya files are skipped with a note: this pack applies LoRAs to the DiT only). ``name``
    names the file in messages when ``source`` is a state dict.
    """
    from ..checkpoints import check_finite, load_state_dict, normalize_lora

    if kind not in LORA_KINDS:
        raise InputError(f"unknown LoRA kind {kind!r}; expected one of {', '.join(LORA_KINDS)}.")
    name = name or ("the LoRA" if isinstance(source, dict) else str(source))
    state = source if isinstance(source, dict) else load_state_dict(source)
    check_finite(state, name)
    has_motion = any(is_motion_attention(n) for n in layers)
    if not has_motion and (kind == "motion_lora" or any("attn_temporal" in k for k in state)):
        what = "is a MotionLoRA" if kind == "motion_lora" else "modifies motion modules"
        raise InputError(f"{name} {what} but the model has no motion modules; apply a motion module first "
                         f"(VDiT_ApplyMotionModule) or load a video DiT.")
    if adapter_config is None and not isinstance(source, dict):
        adapter_config = _peft_adapter_config(source)
    shapes = {n: tuple(layer.weight.shape) for n, layer in layers.items()}
    normalized = normalize_lora(state, shapes, adapter_config=adapter_config, source=name)
    text = [k for k in normalized.unmatched if k.startswith("lora_te")]
    stray = [k for k in normalized.unmatched if not k.startswith("lora_te")]
    if stray:
        raise CheckpointError(f"{name} has {len(stray)} keys that match no layer of this model (e.g. {stray[0]}); "
                              f"it was trained for a different model or needs motion modules this model lacks.")
    allowed = _allowed(kind)
    wrong = [n for n in normalized if not allowed(n)]
    if wrong:
        what = {"motion_lora": "motion-module attention (to_q/to_k/to_v/to_out)",
                "domain_adapter": "image attention attn1/attn2 (to_q/to_k/to_v/to_out)"}[kind]
        raise CheckpointError(f"{name} is loaded as a {kind} but modifies {wrong[0]}, which is not {what}; "
                              f"load it as a plain LoRA (VDiT_LoadLoRA).")
    notes = [f"skipped {len(text)} text-encoder keys"] if text else []
    return LoraWeights(dict(normalized), kind, name, normalized.format, notes)


def _peft_adapter_config(path) -> dict | None:
    import json
    from pathlib import Path

    path = Path(path)
    config = (path if path.is_dir() else path.parent) / "adapter_config.json"
    return json.loads(config.read_text()) if config.is_file() else None


# ----- applying and removing ------------------------------------------------------------------------

class LoraAdapter(nn.Module):
    """Adds ``strength * scale * up(down(x))`` to a Linear layer's output."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scale: float, strength: float = 1.0,
                 trainable: bool = False):
        super().__init__()
        self.down = nn.Parameter(down, requires_grad=trainable)
        self.up = nn.Parameter(up, requires_grad=trainable)
        self.scale, self.strength = float(scale), float(strength)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype))
        return y * (self.scale * self.strength)


class AppliedLoras:
    """LoRAs put on a model by :func:`apply_loras`; :meth:`remove` restores it exactly."""

    def __init__(self):
        self._weights: list[tuple[Linear, nn.Parameter]] = []
        self._adapters: list[tuple[Linear, LoraAdapter]] = []

    def remove(self) -> None:
        for layer, original in reversed(self._weights):
            if original.device != layer.weight.device:  # the host moved the model while patched
                original.data = original.data.to(layer.weight.device)
            layer.weight = original
        for layer, adapter in self._adapters:
            layer.adapters.remove(adapter)
        self._weights, self._adapters = [], []


def apply_loras(layers: dict[str, Linear], patches: Iterable[tuple[LoraWeights, float]],
                merge: bool | None = None) -> AppliedLoras:
    """Put every (LoRA, strength) of ``patches`` on ``layers`` (stacked: their updates add up).

    ``merge=None`` merges into float weights and uses runtime adapters for fp8-stored ones.
    Strength 0 patches are skipped (a domain adapter at scale 0 is removed).
    """
    applied = AppliedLoras()
    per_layer: dict[str, list[tuple]] = {}
    for weights, strength in patches:
        if strength == 0:
            continue
        for name, pair in weights.pairs.items():
            if name not in layers:
                raise InputError(f"{weights.source} modifies {name}, which this model does not have; "
                                 f"load the LoRA for this model.")
            per_layer.setdefault(name, []).append((pair, float(strength)))
    try:
        for name, entries in per_layer.items():
            layer = layers[name]
            weight = layer.weight
            use_merge = (weight.dtype not in FP8_DTYPES) if merge is None else merge
            if use_merge:
                merged = weight.detach().float()
                for pair, strength in entries:  # float32 on the weight's device, then one rounding
                    up, down = pair.up.to(weight.device, torch.float32), pair.down.to(weight.device, torch.float32)
                    merged = merged.addmm(up, down, alpha=strength * pair.scale)
                merged = merged.to(weight.dtype)
                applied._weights.append((layer, weight))
                layer.weight = nn.Parameter(merged, requires_grad=False)
            else:
                for pair, strength in entries:
                    adapter = LoraAdapter(pair.down.to(weight.device), pair.up.to(weight.device), pair.scale, strength)
                    layer.adapters.append(adapter)
                    applied._adapters.append((layer, adapter))
    except BaseException:
        applied.remove()
        raise
    return applied


@contextmanager
def loras_applied(layers: dict[str, Linear], patches, merge: bool | None = None):
    """``with loras_applied(linear_layers(model), [(lora, 0.8)]): ...`` - removed on exit."""
    applied = apply_loras(layers, patches, merge)
    try:
        yield applied
    finally:
        applied.remove()


# ----- training -------------------------------------------------------------------------------------

TRAINABLE_ATTR = "trainable_lora"


def add_trainable_lora(model: nn.Module, target: str = "all", rank: int = 128,
                       alpha: float | None = None) -> list[nn.Parameter]:
    """Wrap the ``target`` Linear layers ("all" | "motion" = motion-module attention q/k/v/out |
    "spatial_attention" = attn1/attn2 q/k/v/out) with trainable adapters: ``down`` Kaiming-uniform,
    ``up`` zero, scale ``alpha / rank`` (alpha defaults to rank). The adapters are registered
    under ``model.trainable_lora`` (so optimisers, DDP and ``.to()`` see them) and the model's
    output is unchanged until ``up`` moves. Returns the new trainable parameters.
    """
    if target not in TRAIN_TARGETS:
        raise InputError(f"unknown LoRA target {target!r}; expected one of {', '.join(TRAIN_TARGETS)}.")
    if hasattr(model, TRAINABLE_ATTR):
        raise InputError("the model already has trainable LoRA adapters; call remove_trainable_lora first.")
    allowed = _allowed(target)
    layers = {n: m for n, m in linear_layers(model).items() if allowed(n)}
    if not layers:
        raise InputError(f"the model has no layers for LoRA target {target!r}"
                         f"{' (it has no motion modules)' if target == 'motion' else ''}; choose another target.")
    adapters = nn.ModuleDict()
    for name, layer in layers.items():
        weight = layer.weight
        dtype = weight.dtype if weight.dtype not in FP8_DTYPES else torch.float32
        down = torch.empty(rank, layer.in_features, device=weight.device, dtype=dtype)
        nn.init.kaiming_uniform_(down, a=math.sqrt(5))
        up = torch.zeros(layer.out_features, rank, device=weight.device, dtype=dtype)
        adapter = LoraAdapter(down, up, (alpha if alpha is not None else rank) / rank, trainable=True)
        adapter.target = name
        layer.adapters.append(adapter)
        adapters[name.replace(".", "__")] = adapter
    setattr(model, TRAINABLE_ATTR, adapters)
    return [p for adapter in adapters.values() for p in (adapter.down, adapter.up)]


def trainable_lora_pairs(model: nn.Module) -> dict:
    """{module name: LoraPair} of the trainable adapters (detached copies, float32, CPU)."""
    from ..checkpoints import LoraPair

    adapters = getattr(model, TRAINABLE_ATTR, None)
    if adapters is None:
        raise InputError("the model has no trainable LoRA adapters; call add_trainable_lora first.")
    return {a.target: LoraPair(a.down.detach().float().cpu(), a.up.detach().float().cpu(), a.scale)
            for a in adapters.values()}


def trainable_lora_state_dict(model: nn.Module, format: str = "kohya") -> dict:
    """The trainable adapters in a published layout: "kohya" (EasyAnimate lora_unet__ + alpha),
    "peft" or "motion_lora" (AnimateDiff processor layout; attention layers only)."""
    from ..checkpoints import lora_state_dict

    return lora_state_dict(trainable_lora_pairs(model), format=format)


def remove_trainable_lora(model: nn.Module) -> None:
    adapters = getattr(model, TRAINABLE_ATTR, None)
    if adapters is None:
        return
    layers = linear_layers(model)
    for adapter in adapters.values():
        layers[adapter.target].adapters.remove(adapter)
    delattr(model, TRAINABLE_ATTR)

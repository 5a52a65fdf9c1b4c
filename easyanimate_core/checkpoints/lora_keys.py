"""LoRA file layouts -> one normalised form, and back.

Published layouts:
    kohya        lora_unet_<path_with_underscores>.lora_down.weight / .lora_up.weight / .alpha
                 (EasyAnimate writes lora_unet__... with a double underscore because its root
                 module name is empty); scale = alpha / rank, missing alpha = rank.
    peft         [transformer.|unet.|base_model.model.]<dotted.path>.lora_A[.default].weight / lora_B
                 scale = lora_alpha / r from adapter_config.json, else 1.0.
    motion_lora  old diffusers attention processors (AnimateDiff MotionLoRA, domain adapter):
                 <path>.processor.to_q_lora.down.weight / .up.weight, to_out_lora -> to_out.0;
                 no alpha: scale 1.0 (the user's strength multiplies it).
The normalised form maps the module's dotted path inside the transformer to a LoraPair, so that
ΔW = scale · up @ down for every format.
"""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import CheckpointError, InputError

KOHYA_PREFIX = "lora_unet_"
MODEL_PREFIXES = ("base_model.model.", "transformer.", "unet.")

_KOHYA = re.compile(r"^(lora_unet_|lora_te\d?_)(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_PEFT = re.compile(r"^(.+)\.(lora_A|lora_B)(?:\.default)?\.weight$")
_PROCESSOR = re.compile(r"^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_PROCESSOR_TARGET = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}


@dataclass
class LoraPair:
    down: torch.Tensor  # [rank, in]
    up: torch.Tensor  # [out, rank]
    scale: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self) -> torch.Tensor:
        """scale · up @ down, in float32."""
        return self.scale * (self.up.float() @ self.down.float())


class NormalizedLora(dict):
    """{module path: LoraPair} plus the file keys that matched no module (`unmatched`)."""

    def __init__(self, pairs, format, unmatched):
        super().__init__(pairs)
        self.format = format
        self.unmatched = unmatched


def lora_format(keys) -> str | None:
    """'lora_kohya' / 'lora_peft' / 'motion_lora' by key pattern, or None."""
    keys = list(keys)
    if any(_PROCESSOR.match(k) for k in keys):
        return "motion_lora"
    if any(_KOHYA.match(k) for k in keys):
        return "lora_kohya"
    if any(_PEFT.match(k) for k in keys):
        return "lora_peft"
    return None


def _as_matrix(tensor, key, source):
    # kohya stores 1x1 convolutions as [r, in, 1, 1]; those act like Linear layers.
    if tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        return tensor.flatten(1)
    if tensor.ndim != 2:
        raise CheckpointError(
            f"{source} has a shape mismatch: LoRA weight {key} is {list(tensor.shape)}, "
            f"expected a matrix [rank, in] or [out, rank]."
        )
    return tensor


def _group(state_dict):
    """file keys -> {(kind, stem): {"down": key, "up": key, "alpha": key}} and the keys that are no LoRA."""
    groups, other = {}, []
    for key in state_dict:
        if m := _PROCESSOR.match(key):
            stem = f"{m.group(1)}.{_PROCESSOR_TARGET[m.group(2)]}"
            groups.setdefault(("motion_lora", stem), {})[m.group(3)] = key
        elif m := _KOHYA.match(key):
            part = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}[m.group(3)]
            kind = "lora_kohya" if m.group(1) == KOHYA_PREFIX else "lora_kohya_text"
            groups.setdefault((kind, m.group(2)), {})[part] = key
        elif m := _PEFT.match(key):
            groups.setdefault(("lora_peft", m.group(1)), {})["down" if m.group(2) == "lora_A" else "up"] = key
        else:
            other.append(key)
    # diffusers' kohya conversions keep an alpha next to PEFT-named pairs: <stem>.alpha
    peft_alphas = [k for k in other if k.endswith(".alpha") and ("lora_peft", k[: -len(".alpha")]) in groups]
    for key in peft_alphas:
        groups["lora_peft", key[: -len(".alpha")]]["alpha"] = key
    attached = set(peft_alphas)
    return groups, [k for k in other if k not in attached]


def _resolve(kind, stem, names, flat_names):
    """The module path a file stem names, or None; ambiguous kohya names give None too."""
    if kind == "lora_kohya":
        flat = stem[1:] if stem.startswith("_") and stem[1:] in flat_names else stem
        candidates = flat_names.get(flat, ())
        return candidates[0] if len(candidates) == 1 else None
    candidate = stem
    while candidate not in names:
        prefix = next((p for p in MODEL_PREFIXES if candidate.startswith(p)), None)
        if prefix is None:
            return None
        candidate = candidate[len(prefix) :]
    return candidate


def normalize_lora(state_dict, module_names, adapter_config=None, source="the LoRA file") -> NormalizedLora:
    """Map every LoRA pair in `state_dict` to the dotted path of the module it modifies.

    `module_names`: the model's Linear module names, or a mapping name -> weight shape (out, in),
    in which case the pair shapes are checked. Keys that name no module are collected in
    `.unmatched`; if nothing matches at all, a CheckpointError names what was expected."""
    shapes = module_names if isinstance(module_names, Mapping) else None
    names = set(module_names)
    flat_names = {}
    for name in names:  # kohya names are underscore-joined paths: look them up, never guess
        flat_names.setdefault(name.replace(".", "_"), []).append(name)
    groups, unmatched = _group(state_dict)
    pairs = {}
    formats = set()
    for (kind, stem), parts in groups.items():
        target = None if kind == "lora_kohya_text" else _resolve(kind, stem, names, flat_names)
        if target is None:
            unmatched += sorted(parts.values())
            continue
        if "down" not in parts or "up" not in parts:
            missing = "down" if "down" not in parts else "up"
            raise CheckpointError(
                f"{source} is missing required keys: the {missing} weight of the LoRA pair "
                f"for {target} (found only {', '.join(sorted(parts.values()))})."
            )
        down = _as_matrix(state_dict[parts["down"]], parts["down"], source)
        up = _as_matrix(state_dict[parts["up"]], parts["up"], source)
        if up.shape[1] != down.shape[0]:
            raise CheckpointError(
                f"{source} has a shape mismatch: {parts['up']} is {list(up.shape)} but "
                f"{parts['down']} is {list(down.shape)}; their ranks must agree."
            )
        if shapes is not None and tuple(shapes[target]) != (up.shape[0], down.shape[1]):
            raise CheckpointError(
                f"{source} has a shape mismatch: the LoRA for {target} is "
                f"[{up.shape[0]}, {down.shape[1]}] but the module's weight is "
                f"{list(shapes[target])}; the LoRA was trained for a different model."
            )
        pairs[target] = LoraPair(
            down=down, up=up, scale=_scale(kind, state_dict, parts, down.shape[0], adapter_config)
        )
        formats.add(kind)
    if not pairs:
        example = min(names) if names else "(none)"
        raise CheckpointError(
            f"{source} matches no module of the model (first keys: "
            f"{', '.join(list(state_dict)[:2])}); expected LoRA keys naming its Linear "
            f"layers, e.g. {example}."
        )
    fmt = formats.pop() if len(formats) == 1 else "mixed"
    return NormalizedLora(pairs, fmt, sorted(unmatched))


def _scale(kind, state_dict, parts, rank, adapter_config):
    if "alpha" in parts:
        alpha = float(state_dict[parts["alpha"]].float().item())
        return (alpha if alpha else rank) / rank  # alpha 0 means "no scaling", as in kohya
    if kind == "lora_peft" and adapter_config:
        alpha = adapter_config.get("lora_alpha", rank)
        return alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank
    return 1.0  # kohya without alpha (alpha = rank), PEFT without config, processor format


def lora_facts(state_dict) -> dict:
    """Rank(s), scale(s), number of targets and what they touch, from the keys alone."""
    groups, other = _group(state_dict)
    ranks, alphas, stems, text = set(), set(), [], 0
    for (kind, stem), parts in groups.items():
        if kind == "lora_kohya_text":
            text += 1
            continue
        stems.append(stem)
        if "down" in parts:
            ranks.add(state_dict[parts["down"]].shape[0])
        if "alpha" in parts and state_dict[parts["alpha"]].device.type != "meta":
            alphas.add(float(state_dict[parts["alpha"]].float().item()))
    leaves = sorted({_target_kind(s) for s in stems})
    facts = {
        "targets": len(stems),
        "rank": min(ranks) if len(ranks) == 1 else sorted(ranks),
        "target_kinds": leaves,
        "motion_module_targets": sum("attn_temporal" in s for s in stems),
    }
    if alphas:
        facts["alpha"] = min(alphas) if len(alphas) == 1 else sorted(alphas)
    if text:
        facts["text_encoder_targets"] = text
    if other:
        facts["other_keys"] = len(other)
    return facts


_TARGET_KINDS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out_0",
    "ff_net_0_proj",
    "ff_net_2",
    "proj_in",
    "proj_out",
    "linear_1",
    "linear_2",
    "linear",
)


def _target_kind(stem):
    """The layer kind a LoRA stem ends in (to_q, ff_net_2, ...), for reports."""
    flat = stem.replace(".", "_")
    if re.search(r"long_connect_fc_\d+$", flat):
        return "long_connect_fc"
    return next((kind for kind in _TARGET_KINDS if flat.endswith(kind)), "other")


def lora_state_dict(pairs, format="kohya") -> dict:
    """Save normalised pairs in a published layout. kohya: EasyAnimate's lora_unet__ names with an
    alpha tensor (alpha = scale · rank). peft / motion_lora hold no alpha, so the scale is folded
    into `up` and a loader's default scale 1.0 reproduces ΔW."""
    if format not in ("kohya", "peft", "motion_lora"):
        raise InputError(f"unknown LoRA format {format!r}; expected 'kohya', 'peft' or 'motion_lora'.")
    out = {}
    for name, pair in pairs.items():
        down, up = pair.down.contiguous(), pair.up
        if format == "kohya":
            stem = KOHYA_PREFIX + "_" + name.replace(".", "_")
            out[f"{stem}.lora_down.weight"] = down
            out[f"{stem}.lora_up.weight"] = up.contiguous()
            out[f"{stem}.alpha"] = torch.tensor(float(pair.scale * pair.rank))
            continue
        up = (up * pair.scale).contiguous() if pair.scale != 1.0 else up.contiguous()
        if format == "peft":
            out[f"transformer.{name}.lora_A.weight"] = down
            out[f"transformer.{name}.lora_B.weight"] = up
            continue
        parent, _, leaf = name.removesuffix(".0").rpartition(".")
        if leaf not in _PROCESSOR_TARGET or _PROCESSOR_TARGET[leaf] != name[len(parent) + 1 :]:
            raise InputError(
                f"cannot save the LoRA for {name} as a motion LoRA: that format only holds "
                f"attention projections (to_q, to_k, to_v, to_out.0); save it as 'kohya'."
            )
        out[f"{parent}.processor.{leaf}_lora.down.weight"] = down
        out[f"{parent}.processor.{leaf}_lora.up.weight"] = up
    return out

"""Key conversions between published layouts, training-key dropping, and the reference's loading
adjustments (motion-module extraction, input-channel expansion, fit checks).

All functions work on shapes and views, never on values, so they run on `meta` tensors too.
"""

import re

import torch

from ..errors import CheckpointError

# Original PixArt .pth names -> diffusers PixArt names (weights and biases alike).
_PIXART_TOP = {
    "x_embedder.proj": "pos_embed.proj",
    "t_embedder.mlp.0": "adaln_single.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "adaln_single.emb.timestep_embedder.linear_2",
    "t_block.1": "adaln_single.linear",
    "y_embedder.y_proj.fc1": "caption_projection.linear_1",
    "y_embedder.y_proj.fc2": "caption_projection.linear_2",
    "csize_embedder.mlp.0": "adaln_single.emb.resolution_embedder.linear_1",
    "csize_embedder.mlp.2": "adaln_single.emb.resolution_embedder.linear_2",
    "ar_embedder.mlp.0": "adaln_single.emb.aspect_ratio_embedder.linear_1",
    "ar_embedder.mlp.2": "adaln_single.emb.aspect_ratio_embedder.linear_2",
    "final_layer.linear": "proj_out",
}
_PIXART_BLOCK = {
    "attn.proj": "attn1.to_out.0",
    "cross_attn.q_linear": "attn2.to_q",
    "cross_attn.proj": "attn2.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
# Fused projections: split along the output dimension in this order.
_PIXART_FUSED = {
    "attn.qkv": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
    "cross_attn.kv_linear": ("attn2.to_k", "attn2.to_v"),
}
# Buffers of the original layout that the diffusers model does not keep: the fixed sin-cos grid
# (recomputed per resolution) and the learned null caption (EasyAnimate encodes "" with T5).
PIXART_DROPPED = ("pos_embed", "y_embedder.y_embedding")

_ORIGINAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def is_pixart_original(keys) -> bool:
    return any(k == "x_embedder.proj.weight" or (k.startswith("blocks.") and ".attn.qkv." in k) for k in keys)


def convert_pixart_original(state_dict, source="the state dict") -> dict:
    """Original PixArt-alpha layout -> diffusers layout. Fused qkv / kv weights are split (q, k, v
    order, as PixArt's attention reshapes them); pos_embed and y_embedding are dropped."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        if key in PIXART_DROPPED:
            continue
        if key == "final_layer.scale_shift_table":
            converted["scale_shift_table"] = tensor
            continue
        stem, _, leaf = key.rpartition(".")
        if stem in _PIXART_TOP:
            converted[f"{_PIXART_TOP[stem]}.{leaf}"] = tensor
            continue
        if key.startswith("blocks.") and key.endswith(".scale_shift_table"):
            converted["transformer_blocks." + key[len("blocks.") :]] = tensor
            continue
        match = _ORIGINAL_BLOCK.match(key)
        if match is None or (match.group(2) not in _PIXART_BLOCK and match.group(2) not in _PIXART_FUSED):
            unknown.append(key)
            continue
        block, name, leaf = match.groups()
        prefix = f"transformer_blocks.{block}."
        if name in _PIXART_BLOCK:
            converted[f"{prefix}{_PIXART_BLOCK[name]}.{leaf}"] = tensor
            continue
        targets = _PIXART_FUSED[name]
        if tensor.shape[0] % len(targets):
            raise CheckpointError(
                f"{source} has a shape mismatch: {key} has {tensor.shape[0]} rows, "
                f"expected a multiple of {len(targets)} (fused {'/'.join(targets)})."
            )
        for target, part in zip(targets, tensor.chunk(len(targets), dim=0)):
            converted[f"{prefix}{target}.{leaf}"] = part
    if unknown:
        raise CheckpointError(
            f"{source} looks like an original PixArt checkpoint but has keys this "
            f"converter does not know ({', '.join(unknown[:3])}); expected PixArt-alpha "
            f"(x_embedder, t_block, y_embedder, blocks.N.attn/cross_attn/mlp, final_layer)."
        )
    return converted


# ----------------------------------------------------------------------------- training keys


def _is_training_key(key):
    return key.startswith(("loss.", "discriminator", "model_ema.")) or ".discriminator" in key


def drop_training_keys(state_dict) -> tuple[dict, list]:
    """Remove what a model never loads: VAE training state (loss.* incl. the discriminators and
    LPIPS, Lightning's model_ema.* copy) and motion-module pos_encoder.pe buffers (a fixed
    sinusoid the model regenerates; dropping it also frees any frame-count cap)."""
    kept, dropped = {}, []
    for key, tensor in state_dict.items():
        if _is_training_key(key) or key.endswith("pos_encoder.pe"):
            dropped.append(key)
        else:
            kept[key] = tensor
    return kept, dropped


def describe_dropped(dropped) -> list[str]:
    """One note per kind of dropped key, for reports and logs."""
    notes = []
    pe = [k for k in dropped if k.endswith("pos_encoder.pe")]
    training = [k for k in dropped if _is_training_key(k)]
    if pe:
        notes.append(
            f"dropped {len(pe)} motion-module pos_encoder.pe buffers (fixed sinusoids, regenerated "
            f"by the model)"
        )
    if training:
        notes.append(
            f"dropped {len(training)} training-only keys (loss / discriminator / EMA copy), "
            f"e.g. {training[0]}"
        )
    return notes


# ----------------------------------------------------------------------------- motion modules


def extract_motion_module(state_dict, source="the state dict") -> dict:
    """The motion-module part of a full transformer (every key containing 'attn_temporal'),
    the layout of the published easyanimate_v1_mm.safetensors."""
    motion = {k: v for k, v in state_dict.items() if "attn_temporal" in k}
    if not motion:
        raise CheckpointError(
            f"{source} has no motion-module keys (transformer_blocks.N.attn_temporal.*); "
            f"expected a full EasyAnimate transformer."
        )
    return motion


def check_motion_module_fits(motion_state_dict, hidden_size, depth, source="the motion module") -> dict:
    """Raise if a motion module cannot go into a DiT of this hidden size and depth; returns its facts."""
    from .detect import motion_module_facts

    facts = motion_module_facts(motion_state_dict, source)
    if facts["hidden_size"] != hidden_size:
        raise CheckpointError(
            f"{source}: motion module for hidden size {facts['hidden_size']} cannot go into "
            f"a DiT of hidden size {hidden_size}; use a motion module trained for this DiT."
        )
    if facts["depth"] != depth:
        raise CheckpointError(
            f"{source}: motion module with {facts['depth']} blocks cannot go into a DiT with "
            f"{depth} blocks; use a motion module trained for this DiT."
        )
    return facts


# ----------------------------------------------------------------------------- input channels


def expand_input_channels(state_dict, in_channels, source="the state dict") -> dict:
    """Widen pos_embed.proj.weight to `in_channels` the way the reference loads a 4-channel
    checkpoint into a 12-channel InP model: checkpoint channels first, the new ones zero."""
    weight = state_dict.get("pos_embed.proj.weight")
    if weight is None:
        raise CheckpointError(f"{source} is missing required keys: pos_embed.proj.weight.")
    have = weight.shape[1]
    if have == in_channels:
        return state_dict
    if have > in_channels:
        raise CheckpointError(
            f"{source} has {have} input channels, more than the model's {in_channels}; "
            f"load it into a model with in_channels={have}."
        )
    widened = torch.zeros(
        (weight.shape[0], in_channels, *weight.shape[2:]), dtype=weight.dtype, device=weight.device
    )
    if weight.device.type != "meta":
        widened[:, :have] = weight
    return {**state_dict, "pos_embed.proj.weight": widened}

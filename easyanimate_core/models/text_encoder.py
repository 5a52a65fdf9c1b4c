"""T5 text encoder for EasyAnimate / PixArt conditioning.

Prompts are cleaned (see ``text_cleaning``), tokenised with T5's tokenizer, padded/truncated to 120
tokens and encoded by the T5 v1.1 encoder; the attention mask marks real tokens (+ EOS). That
is the reference's conditioning: ``(embeds [B, 120, 4096], mask [B, 120])``, mask as int64 0/1
like the tokenizer's. The DiT masks padded keys, which then contribute nothing, so
:func:`normalize_text_embeddings` can bring embeddings from elsewhere (e.g. ComfyUI's native T5,
unpadded and maskless) to the same form by zero padding.

Weights load from
- a transformers folder (``config.json`` + ``*.safetensors`` shards or ``pytorch_model*.bin``),
  also an EasyAnimate model folder holding ``text_encoder/`` and ``tokenizer/``;
- a single safetensors file in HF key names (``shared.weight``, ``encoder.block.N...``), as the
  ``t5xxl_fp16`` / ``t5xxl_fp8_e4m3fn(_scaled)`` files ComfyUI users keep in
  ``models/text_encoders``; the config is then read off the tensor shapes (T5-XXL: d_model 4096,
  24 layers, 64 heads, d_kv 64, d_ff 10240, gated-gelu, vocab 32128).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError
from ..text_cleaning import clean_caption

MAX_LENGTH = 120
_ANCHOR = "encoder.final_layer_norm.weight"
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def t5_config_from_state_dict(state: dict):
    """A T5 encoder config that fits the tensors of ``state`` (HF key names)."""
    from transformers import T5Config

    vocab_size, d_model = state["shared.weight"].shape
    num_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.block."))
    attention = "encoder.block.0.layer.0.SelfAttention."
    num_buckets, num_heads = state[attention + "relative_attention_bias.weight"].shape
    inner_dim = state[attention + "q.weight"].shape[0]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state
    d_ff = state["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
    return T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=inner_dim // num_heads, d_ff=d_ff,
                    num_layers=num_layers, num_heads=num_heads, relative_attention_num_buckets=num_buckets,
                    feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False,
                    use_cache=False, tie_word_embeddings=False)


def _open_weights(files: Sequence[Path]) -> dict:
    """key -> zero-argument loader for every tensor in ``files``; nothing is read until a loader is
    called, so converting T5-XXL tensor by tensor never holds two full copies in memory."""
    from safetensors import safe_open

    from ..checkpoints import load_state_dict
    from ..checkpoints.io import read_safetensors_header

    loaders = {}
    for file in files:
        if file.suffix != ".safetensors":  # weights-only and memory-mapped, with the checkpoints' messages
            loaders.update({key: partial(lambda v: v, value) for key, value in load_state_dict(file).items()})
            continue
        read_safetensors_header(file)  # a truncated download is reported before any tensor is read
        try:
            handle = safe_open(str(file), framework="pt")
        except Exception as error:  # noqa: BLE001 - the safetensors library raises its own error types
            raise CheckpointError(f"{file} could not be read as a weights file ({' '.join(str(error).split())}); "
                                  f"download it again") from None
        loaders.update({key: partial(handle.get_tensor, key) for key in handle.keys()})  # noqa: SIM118
    return loaders


def _encoder_tensors(loaders: dict, source: Path, dtype: torch.dtype | None) -> dict:
    """The encoder's tensors under HF names, scaled-fp8 weights dequantised, cast to ``dtype``."""
    from ..checkpoints import check_finite

    prefixes = [k[: -len(_ANCHOR)] for k in loaders if k.endswith(_ANCHOR)]
    if len(prefixes) != 1:
        sample = ", ".join(sorted(loaders)[:3])
        raise CheckpointError(f"{source} is not a T5 encoder: expected keys such as 'shared.weight' and "
                              f"'{_ANCHOR}', found {sample or 'no tensors'}; pick a T5 (v1.1 XXL) text encoder file")
    prefix = prefixes[0]
    loaders = {k[len(prefix):]: v for k, v in loaders.items() if k.startswith(prefix)}
    if "shared.weight" not in loaders and "encoder.embed_tokens.weight" in loaders:
        loaders["shared.weight"] = loaders["encoder.embed_tokens.weight"]
    stored = loaders[_ANCHOR]().dtype
    if dtype is None:
        dtype = torch.bfloat16 if stored.itemsize == 1 else stored
    tensors = {}
    for key, load in loaders.items():
        if not (key.startswith("encoder.") or key == "shared.weight") or key.endswith((".scale_weight", ".scale_input")):
            continue  # decoder / lm_head of a full T5, fp8 scale factors (applied below)
        if key == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight
        scale = loaders.get(key[: -len("weight")] + "scale_weight") if key.endswith(".weight") else None
        # T5 v1.1 overflows fp16 in the feed-forward output; transformers keeps `wo` in fp32 too
        target = torch.float32 if dtype == torch.float16 and key.endswith("DenseReluDense.wo.weight") else dtype
        value = load()
        check_finite({key: value}, source)  # as read: a cast could turn large values into inf
        tensors[key] = value.to(target) if scale is None else (value.to(torch.float32) * scale().float()).to(target)
    return tensors


def _build_t5(config, tensors: dict, source: Path):
    from transformers import T5EncoderModel

    config.is_encoder_decoder, config.use_cache = False, False
    with torch.device("meta"):
        model = T5EncoderModel(config)
    expected = {k for k in model.state_dict() if k != "encoder.embed_tokens.weight"}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit a T5 encoder of its own shapes: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}; use an unmodified T5 v1.1 encoder file")
    try:
        model.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"{source} has tensors of unexpected shapes for its config ({error})") from error
    model.encoder.embed_tokens = model.shared
    return model.eval().requires_grad_(False)


def find_tokenizer(path: Path, tokenizer_path) -> Path:
    if tokenizer_path is not None:
        candidates = [Path(tokenizer_path)]
    else:
        base = path if path.is_dir() else path.parent
        candidates = [base / "tokenizer", base, base.parent / "tokenizer"]
    for folder in candidates:
        if folder.is_dir() and any((folder / name).exists() for name in _TOKENIZER_FILES):
            return folder
    raise CheckpointError(f"no T5 tokenizer found for {path} (looked in {', '.join(map(str, candidates))}); "
                          "pass tokenizer_path = a folder with tokenizer.json or spiece.model "
                          "(ComfyUI ships one in comfy/text_encoders/t5_tokenizer)")


class TextEncoder:
    """T5 tokenizer + encoder producing the DiT's text conditioning."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path, tokenizer_path=None, dtype: torch.dtype | None = None,
             device=None) -> TextEncoder:
        """Load from a model folder or a single safetensors file (see the module docstring).
        ``dtype`` None keeps the stored precision (fp8 files become bf16)."""
        from transformers import T5Config, T5TokenizerFast

        from ..checkpoints.io import transformers_weight_files

        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"text encoder {path} does not exist; check the path or the file name")
        weights_dir = path / "text_encoder" if (path / "text_encoder").is_dir() else path
        if weights_dir.is_dir():
            files = transformers_weight_files(weights_dir)
            if not files:
                raise CheckpointError(f"{weights_dir} holds no model*.safetensors or pytorch_model*.bin weights; "
                                      "point to the T5 text_encoder folder or a t5xxl .safetensors file")
            state = _encoder_tensors(_open_weights(files), weights_dir, dtype)
            config_file = weights_dir / "config.json"
            config = (T5Config.from_dict(json.loads(config_file.read_text())) if config_file.exists()
                      else t5_config_from_state_dict(state))
        else:
            state = _encoder_tensors(_open_weights([path]), path, dtype)
            config = t5_config_from_state_dict(state)
        model = _build_t5(config, state, path)
        tokenizer = T5TokenizerFast.from_pretrained(str(find_tokenizer(path, tokenizer_path)))
        encoder = cls(model, tokenizer)
        return encoder.to(device) if device is not None else encoder

    def to(self, device) -> TextEncoder:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    def tokenize(self, prompts: Sequence[str], max_length: int = MAX_LENGTH, clean: bool = True):
        """Token ids and mask ``(B, max_length)``; warns once per prompt that had to be truncated."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        texts = [clean_caption(p) if clean else p for p in prompts]
        tokens = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=True).input_ids
            if len(ids) > max_length:
                dropped = self.tokenizer.decode(ids[max_length - 1:-1])
                warnings.warn(f"prompt longer than {max_length} T5 tokens; this part was cut off: {dropped!r}",
                              stacklevel=3)
        return tokens.input_ids, tokens.attention_mask

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], max_length: int = MAX_LENGTH,
               clean: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeds [B, max_length, C], mask [B, max_length] int64)`` on the encoder's device.
        An empty prompt (the reference's default negative) is just EOS + padding."""
        ids, mask = self.tokenize(prompts, max_length, clean)
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return embeds, mask


def normalize_text_embeddings(embeds: torch.Tensor, mask: torch.Tensor | None = None,
                              max_length: int = MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring text embeddings to the reference's ``(B, max_length, C)`` + int64 mask form.

    Without a mask every token counts as real (ComfyUI's native T5 output: real tokens + EOS).
    Shorter sequences are padded with zeros under mask 0 (masked keys contribute nothing, so the
    pad value is irrelevant); longer ones are cut to ``max_length`` with a warning when real
    tokens are dropped."""
    if embeds.ndim != 3:
        raise InputError(f"text embeddings must be (batch, tokens, channels), got shape {tuple(embeds.shape)}; "
                         "connect a T5 text conditioning")
    batch, length, _ = embeds.shape
    if mask is None:
        mask = torch.ones(batch, length, dtype=torch.long, device=embeds.device)
    elif mask.shape != (batch, length):
        raise InputError(f"text mask has shape {tuple(mask.shape)} but the embeddings have {batch} x {length} "
                         "tokens; pass the mask that came with these embeddings")
    mask = mask.to(device=embeds.device, dtype=torch.long)
    if length > max_length:
        if mask[:, max_length:].any():
            warnings.warn(f"text conditioning has {length} tokens; keeping the first {max_length} "
                          "(the length EasyAnimate was trained with)", stacklevel=2)
        return embeds[:, :max_length], mask[:, :max_length]
    pad = max_length - length
    embeds = torch.cat([embeds, embeds.new_zeros(batch, pad, embeds.shape[2])], dim=1)
    mask = torch.cat([mask, mask.new_zeros(batch, pad)], dim=1)
    return embeds, mask

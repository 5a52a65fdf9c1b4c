"""Text nodes: prompt -> CONDITIONING in the form the EasyAnimate DiT was trained with (120 T5
tokens + attention mask), from ComfyUI's native T5 (CLIPLoader, e.g. type ``pixart``) or from the
pack's own T5 loader (a release's ``text_encoder/`` + ``tokenizer/`` folders, or a t5xxl file).

Both routes give ``[[embeds (1, 120, C), {"attention_mask": (1, 120)}]]``; the sampler also accepts
native CLIPTextEncode output (unpadded, maskless) and pads it the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import torch

from ..easyanimate_core.checkpoints import detect
from ..easyanimate_core.errors import CheckpointError, InputError
from ..easyanimate_core.models.text_encoder import MAX_LENGTH, find_tokenizer, normalize_text_embeddings
from ..easyanimate_core.text_cleaning import clean_caption
from . import host
from .choices import LOAD_DTYPES, check_choice

log = logging.getLogger(__name__)

CATEGORY = "VideoDiT/text"
TEXT_ENCODER_FOLDERS = ("easyanimate", "text_encoders")

TEXT_TOOLTIP = "The prompt. The model was trained on 120 T5 tokens (about 80-100 English words); more is cut off."
CLEAN_TOOLTIP = ("Clean the prompt as the reference pipelines do (lower case, URLs and odd symbols removed) "
                 "before tokenising. Turn off to feed it verbatim.")


@contextlib.contextmanager
def _warnings_logged():
    """Log the warnings raised inside (prompt cut to 120 tokens) every time: Python's own display
    shows a warning once per code location, and the log is what ComfyUI users read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        log.warning("%s", warning.message)


def _conditioning(embeds: torch.Tensor, mask: torch.Tensor) -> list:
    device = host.intermediate_device()
    return [[embeds.float().to(device), {"attention_mask": mask.to(device)}]]


class VDiT_TextEncode:
    DESCRIPTION = ("Encodes a prompt with a native ComfyUI T5 text encoder (Load CLIP with type 'pixart' and a "
                   "t5xxl file from models/text_encoders) into EasyAnimate conditioning: padded to 120 tokens "
                   "with an attention mask, as the model was trained. An empty prompt gives the all-padding "
                   "negative.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "A T5-XXL text encoder from Load CLIP (type pixart)."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": TEXT_TOOLTIP}),
            "clean": ("BOOLEAN", {"default": True, "tooltip": CLEAN_TOOLTIP}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("T5 embeddings (1, 120, 4096) with attention_mask.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, clip, text, clean=True):
        if not hasattr(clip, "tokenize") or not hasattr(clip, "encode_from_tokens"):
            raise InputError(f"the clip input is a {type(clip).__name__}, expected a native CLIP (Load CLIP with "
                             f"type pixart); for the pack's own T5 use 'EasyAnimate T5 Encode'.")
        tokens = clip.tokenize(clean_caption(text) if clean else text)
        output = clip.encode_from_tokens(tokens, return_dict=True)
        embeds = output["cond"]
        with _warnings_logged():
            embeds, mask = normalize_text_embeddings(embeds[:1])
        return (_conditioning(embeds, mask),)


def _text_encoder_files() -> list:
    names = []
    for key in TEXT_ENCODER_FOLDERS:
        names += [name for name in host.model_files(key, detect.T5) if name not in names]
    return names


def _text_encoder_path(name: str) -> str:
    for key in TEXT_ENCODER_FOLDERS:
        try:
            return host.model_path(name, key)
        except CheckpointError:
            continue
    raise CheckpointError(f"text encoder '{name}' was not found in models/easyanimate or models/text_encoders; "
                          f"put a T5 text_encoder folder (with its tokenizer) or a t5xxl file there.")


def _bundled_tokenizer(path: str) -> str | None:
    """ComfyUI's own T5 tokenizer for a lone t5xxl file with no tokenizer beside it (the usual
    models/text_encoders setup); None leaves the search, and its error, to the loader."""
    if not os.path.isfile(path):
        return None
    try:
        find_tokenizer(Path(path), None)
        return None
    except CheckpointError:
        return host.comfy_t5_tokenizer()


class VDiT_LoadT5:
    DESCRIPTION = ("Loads a T5 text encoder for EasyAnimate: a release's text_encoder/ folder (the tokenizer/ "
                   "folder next to it is found automatically) from models/easyanimate, or a single t5xxl "
                   "safetensors file (fp16 / fp8) from models/text_encoders, which uses a tokenizer/ folder "
                   "beside it or else the T5 tokenizer ComfyUI ships.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "t5_name": (_text_encoder_files(), {"tooltip": "A text_encoder/ folder or a t5xxl weights file."}),
            "dtype": (list(LOAD_DTYPES), {"default": "auto",
                                     "tooltip": "Weight precision; auto keeps the stored one (fp8 files become "
                                                "bf16)."}),
        }}

    RETURN_TYPES = ("VDIT_T5",)
    RETURN_NAMES = ("t5",)
    OUTPUT_TOOLTIPS = ("The T5 text encoder, for 'EasyAnimate T5 Encode'.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, t5_name, dtype="auto"):
        from ..easyanimate_core.models.text_encoder import TextEncoder

        dtype = LOAD_DTYPES[check_choice("dtype", dtype, LOAD_DTYPES)]
        path = _text_encoder_path(t5_name)
        encoder = TextEncoder.load(path, tokenizer_path=_bundled_tokenizer(path), dtype=dtype,
                                   device=host.offload_device())
        return (encoder,)


class VDiT_T5Encode:
    DESCRIPTION = ("Encodes a prompt with the pack's T5 loader into EasyAnimate conditioning: 120 tokens "
                   "(padded / truncated) with an attention mask, exactly as the reference pipelines. An empty "
                   "prompt gives the all-padding negative.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "t5": ("VDIT_T5", {"tooltip": "From 'Load EasyAnimate T5'."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": TEXT_TOOLTIP}),
            "clean": ("BOOLEAN", {"default": True, "tooltip": CLEAN_TOOLTIP}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("T5 embeddings (1, 120, C) with attention_mask.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, t5, text, clean=True):
        if not hasattr(t5, "encode") or not hasattr(t5, "model"):
            raise InputError(f"the t5 input is a {type(t5).__name__}, expected the VDIT_T5 of a 'Load EasyAnimate "
                             f"T5' node; connect that node's output.")
        host.load_models([t5.model])
        with _warnings_logged():
            embeds, mask = t5.encode([text], max_length=MAX_LENGTH, clean=clean)
        return (_conditioning(embeds, mask),)


NODE_CLASS_MAPPINGS = {
    "VDiT_TextEncode": VDiT_TextEncode,
    "VDiT_LoadT5": VDiT_LoadT5,
    "VDiT_T5Encode": VDiT_T5Encode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VDiT_TextEncode": "EasyAnimate Text Encode (native T5)",
    "VDiT_LoadT5": "Load EasyAnimate T5",
    "VDiT_T5Encode": "EasyAnimate T5 Encode",
}

"""A tiny T5 encoder + tokenizer built locally (no download), for tests, training smoke runs and
the demo. The tokenizer is a SentencePiece unigram model trained here on a small caption corpus
with T5's special ids (pad 0, eos 1, unk 2) and wrapped as a transformers T5 tokenizer.

    write_tiny_text_encoder(folder)   -> folder with text_encoder/ and tokenizer/ (EasyAnimate layout)
    tiny_t5_config(vocab_size)        -> transformers.T5Config (d_model 32, 2 layers, gated-gelu)
    build_tiny_tokenizer(folder)      -> tokenizer saved in folder
"""

from __future__ import annotations

from pathlib import Path

import torch

from training.demo.text import D_MODEL, t5_config, train_t5_tokenizer

CORPUS = [
    "a cat sits on the mat in the sun",
    "a dog runs through the park at sunset",
    "the video is of high quality, and the view is very clear",
    "a woman in a red dress walks through a field of flowers",
    "the camera slowly pans left over snowy mountains",
    "waves crash on a rocky beach under a grey sky",
    "a man rides a bicycle down a busy city street at night",
    "birds fly over a calm lake in the early morning fog",
    "close up of a cup of coffee with steam rising",
    "children play football on green grass, slow motion",
    "a red car drives along a winding mountain road",
    "fireworks explode above a river, bright colours, wide shot",
    "low quality, blurry, worst quality, deformed, ugly, watermark, text",
    "high quality, masterpiece, best quality, highres, ultra-detailed, fantastic",
]
TEXT_DIM = D_MODEL


def build_tiny_tokenizer(folder, vocab_size: int = 160):
    """Train a unigram SentencePiece model on CORPUS and save it as a T5 tokenizer in ``folder``."""
    return train_t5_tokenizer(folder, CORPUS * 4, vocab_size)


def tiny_t5_config(vocab_size: int):
    return t5_config(vocab_size)


def build_tiny_t5(vocab_size: int, seed: int = 0):
    from transformers import T5EncoderModel

    torch.manual_seed(seed)
    model = T5EncoderModel(tiny_t5_config(vocab_size)).eval()
    with torch.no_grad():  # random init is ~N(0, 1); spread the embeddings so tokens differ clearly
        model.shared.weight.normal_(0, 1)
    return model


def write_tiny_text_encoder(folder, seed: int = 0) -> Path:
    """Write ``folder/tokenizer`` and ``folder/text_encoder`` (config.json + model.safetensors), the
    layout of an EasyAnimate model folder; returns ``folder``."""
    folder = Path(folder)
    tokenizer = build_tiny_tokenizer(folder / "tokenizer")
    model = build_tiny_t5(len(tokenizer), seed)
    model.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    return folder

"""The demo model's text encoder: a tiny T5 encoder and a tokenizer built here, with no download.

The tokenizer is a SentencePiece unigram model trained on the synthetic world's vocabulary (every
caption of :mod:`training.demo.world`, so every word of every prompt the world can say, including
the held-out combinations: the words are all seen in training, only some combinations are not),
wrapped as a transformers T5 tokenizer (pad 0, eos 1, unk 2, as T5).

The encoder is a 2-layer T5 (d_model 32) with fixed random weights: it is never trained. Its
token embeddings are drawn wide (N(0, 1)) so that different words give clearly different
states; the DiT's caption projection and cross-attention learn to read them.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from . import world

D_MODEL = 32


def corpus() -> list[str]:
    """Every caption of the world, plus the empty-ish phrases used as negatives."""
    return [scene.caption for scene in world.all_scenes()]


def train_t5_tokenizer(folder, sentences, vocab_size: int, user_symbols=()):
    """A SentencePiece unigram model trained on ``sentences``, saved in ``folder`` as a T5
    tokenizer (pad 0, eos 1, unk 2, as T5); ``user_symbols`` are kept as whole tokens."""
    import sentencepiece as spm
    from transformers import AddedToken, T5TokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=proto, vocab_size=vocab_size,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
        user_defined_symbols=list(user_symbols), character_coverage=1.0, minloglevel=2)
    (folder / "spiece.model").write_bytes(proto.getvalue())
    tokenizer = T5TokenizerFast.from_pretrained(str(folder), extra_ids=0)
    # transformers releases differ on whether SentencePiece's user symbols become added tokens
    # (5.25 leaves them to the unigram model, which puts a lone '▁' before each word); adding
    # them here gives every release the same ids: one per word, as the DiT was trained on
    tokenizer.add_tokens([AddedToken(symbol, normalized=False) for symbol in user_symbols])
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_tokenizer(folder: Path):
    # whole words as user symbols: every world word is one token whatever the unigram model learns
    words = sorted({w for caption in corpus() for w in caption.split()})
    return train_t5_tokenizer(folder, corpus(), len(words) + 40, user_symbols=words)


def t5_config(vocab_size: int):
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, d_model=D_MODEL, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                    is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)


def write_text_encoder(root, seed: int = 0) -> Path:
    """``root/tokenizer`` and ``root/text_encoder`` (the EasyAnimate folder layout); returns root."""
    from transformers import T5EncoderModel

    root = Path(root)
    tokenizer = build_tokenizer(root / "tokenizer")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = T5EncoderModel(t5_config(len(tokenizer))).eval()
    with torch.no_grad():
        model.shared.weight.copy_(torch.randn(model.shared.weight.shape, generator=generator))
    model.save_pretrained(str(root / "text_encoder"), safe_serialization=True)
    return root

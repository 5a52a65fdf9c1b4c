"""T5 text encoder: loading layouts, reference tokenisation, native-conditioning equivalence."""

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from easyanimate_core.errors import CheckpointError, InputError
from easyanimate_core.models.text_encoder import (
    TextEncoder,
    normalize_text_embeddings,
    t5_config_from_state_dict,
)
from tests.tiny_text import write_tiny_text_encoder

PROMPT = "A dog runs through the park at sunset"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_text_encoder(tmp_path_factory.mktemp("tiny_text"))


@pytest.fixture(scope="module")
def encoder(tiny):
    return TextEncoder.load(tiny)


def test_folder_matches_reference_tokenisation_and_encoding(tiny, encoder):
    from transformers import T5EncoderModel, T5TokenizerFast

    tokenizer = T5TokenizerFast.from_pretrained(str(tiny / "tokenizer"))
    model = T5EncoderModel.from_pretrained(str(tiny / "text_encoder")).eval()
    texts = ["a dog runs through the park at sunset", ""]  # cleaned prompt and the default negative
    tokens = tokenizer(texts, padding="max_length", max_length=120, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state

    embeds, mask = encoder.encode([PROMPT, ""])
    assert embeds.shape == (2, 120, 32) and mask.dtype == torch.long
    assert torch.equal(mask, tokens.attention_mask)
    assert mask[1].sum() == 1  # empty negative: EOS only, the rest padding
    assert torch.allclose(embeds, expected, atol=1e-6)


def test_single_file_without_config_builds_the_config_from_shapes(tiny, encoder, tmp_path):
    state = load_file(str(tiny / "text_encoder" / "model.safetensors"))
    state.pop("encoder.embed_tokens.weight", None)  # ComfyUI files carry shared.weight only
    save_file(state, str(tmp_path / "t5_tiny.safetensors"))
    loaded = TextEncoder.load(tmp_path / "t5_tiny.safetensors", tokenizer_path=tiny / "tokenizer")

    config = loaded.model.config
    reference = encoder.model.config
    for field in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "is_gated_act",
                  "dense_act_fn", "relative_attention_num_buckets"):
        assert getattr(config, field) == getattr(reference, field), field
    assert torch.equal(loaded.encode([PROMPT])[0], encoder.encode([PROMPT])[0])


def test_xxl_layout_config_from_shapes():
    """The T5-XXL key set of ComfyUI's t5xxl files (built on meta from the published config) gives
    back the published config and the same keys and shapes."""
    from transformers import T5Config, T5EncoderModel

    published = T5Config(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, vocab_size=32128,
                         feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    with torch.device("meta"):
        state = {k: v for k, v in T5EncoderModel(published).state_dict().items()
                 if k != "encoder.embed_tokens.weight"}
    config = t5_config_from_state_dict(state)
    assert (config.d_model, config.num_layers, config.num_heads, config.d_kv, config.d_ff, config.vocab_size) == \
        (4096, 24, 64, 64, 10240, 32128)
    assert config.is_gated_act and config.dense_act_fn == "gelu_new"
    with torch.device("meta"):
        rebuilt = T5EncoderModel(config).state_dict()
    rebuilt.pop("encoder.embed_tokens.weight", None)
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in state.items()}


def test_prefixed_scaled_fp8_file_is_dequantised(tiny, tmp_path):
    state = load_file(str(tiny / "text_encoder" / "model.safetensors"))
    key = "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"
    scale = torch.tensor(0.02)
    quantised = (state[key] / scale).to(torch.float8_e4m3fn)
    prefixed = {"text_encoders.t5xxl.transformer." + k: v for k, v in state.items()}
    prefixed["text_encoders.t5xxl.transformer." + key] = quantised
    prefixed["text_encoders.t5xxl.transformer." + key[: -len("weight")] + "scale_weight"] = scale
    prefixed["text_encoders.t5xxl.transformer.scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(prefixed, str(tmp_path / "t5_scaled.safetensors"))

    loaded = TextEncoder.load(tmp_path / "t5_scaled.safetensors", tokenizer_path=tiny / "tokenizer",
                              dtype=torch.float32)
    weight = loaded.model.encoder.block[1].layer[1].DenseReluDense.wi_0.weight
    assert torch.equal(weight, quantised.float() * scale)
    assert torch.allclose(weight, state[key], rtol=0.07, atol=1e-3)


def test_fp16_keeps_feed_forward_output_in_fp32(tiny):
    loaded = TextEncoder.load(tiny, dtype=torch.float16)
    assert loaded.dtype == torch.float16
    assert loaded.model.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32


def test_native_unpadded_conditioning_gives_identical_dit_inputs(encoder):
    """ComfyUI's native T5 encodes real tokens + EOS with no padding and no mask."""
    text = "a dog runs through the park at sunset"
    ids = encoder.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        native = encoder.model(input_ids=ids).last_hidden_state  # [1, N, C], maskless
    embeds, mask = normalize_text_embeddings(native)
    ours, our_mask = encoder.encode([text], clean=False)

    n = ids.shape[1]
    assert torch.equal(mask, our_mask) and mask.sum() == n
    assert torch.allclose(embeds[:, :n], ours[:, :n], atol=1e-5)  # T5 masks padding in self-attention
    assert torch.equal(embeds[:, n:], torch.zeros_like(embeds[:, n:]))


def test_normalize_passes_padded_input_and_truncates_long_input():
    embeds, mask = torch.randn(2, 120, 8), torch.zeros(2, 120, dtype=torch.long)
    mask[:, :5] = 1
    out, out_mask = normalize_text_embeddings(embeds, mask)
    assert torch.equal(out, embeds) and torch.equal(out_mask, mask)

    with pytest.warns(UserWarning, match="keeping the first 120"):
        out, out_mask = normalize_text_embeddings(torch.randn(1, 130, 8))
    assert out.shape == (1, 120, 8) and out_mask.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only padding is cut: nothing to warn about
        long_mask = torch.zeros(1, 130, dtype=torch.long)
        long_mask[:, :3] = 1
        normalize_text_embeddings(torch.randn(1, 130, 8), long_mask)


def test_truncation_warns_with_the_dropped_text(encoder):
    with pytest.warns(UserWarning, match="longer than 8 T5 tokens"):
        _, mask = encoder.encode(["a red car drives along a winding mountain road"], max_length=8)
    assert mask.shape == (1, 8) and mask.all()


def test_errors(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        TextEncoder.load(tmp_path / "missing.safetensors")
    save_file({"model.diffusion.weight": torch.zeros(2)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(CheckpointError, match="is not a T5 encoder"):
        TextEncoder.load(tmp_path / "unet.safetensors", tokenizer_path=tiny / "tokenizer")
    state = load_file(str(tiny / "text_encoder" / "model.safetensors"))
    save_file(state, str(tmp_path / "alone.safetensors"))
    with pytest.raises(CheckpointError, match="no T5 tokenizer found"):
        TextEncoder.load(tmp_path / "alone.safetensors")
    del state["encoder.block.1.layer.0.SelfAttention.k.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        TextEncoder.load(tmp_path / "broken.safetensors", tokenizer_path=tiny / "tokenizer")
    with pytest.raises(InputError, match="must be \\(batch, tokens, channels\\)"):
        normalize_text_embeddings(torch.zeros(4, 8))
    with pytest.raises(InputError, match="text mask has shape"):
        normalize_text_embeddings(torch.zeros(1, 4, 8), torch.ones(1, 5))


def test_empty_prompt_list_is_rejected(encoder):
    with pytest.raises(InputError, match="non-empty list of strings"):
        encoder.encode([])


def test_folder_with_pickled_weights_loads_safely(tiny, encoder, tmp_path):
    import shutil

    folder = tmp_path / "text_encoder"
    folder.mkdir()
    shutil.copy(tiny / "text_encoder" / "config.json", folder / "config.json")
    torch.save(load_file(str(tiny / "text_encoder" / "model.safetensors")), folder / "pytorch_model.bin")
    loaded = TextEncoder.load(folder, tokenizer_path=tiny / "tokenizer")
    assert torch.equal(loaded.encode([PROMPT])[0], encoder.encode([PROMPT])[0])


def test_unreadable_file_is_reported(tiny, tmp_path):
    (tmp_path / "t5.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="t5.safetensors is truncated or corrupt"):
        TextEncoder.load(tmp_path / "t5.safetensors", tokenizer_path=tiny / "tokenizer")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no"):
        TextEncoder.load(empty)

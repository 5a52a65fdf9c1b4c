"""Text conditioning reaches the DiT identically whether it comes from our T5 encode (120 tokens +
mask) or ComfyUI-style (native T5 on the unpadded prompt: real tokens + EOS, no mask)."""

import pytest
import torch
from test_pipeline_generate import spy_forward
from tiny_models import load_components, save_model_folder

from easyanimate_core.errors import InputError
from easyanimate_core.sampling.options import SamplingOptions
from easyanimate_core.sampling.pipeline import TextCondition, as_text_condition, denoise, encode_prompts

PROMPT = "A Cat sits on the mat in the sun"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return load_components(save_model_folder(tmp_path_factory.mktemp("m"), in_channels=12))


def native_t5(parts, prompt):
    """What ComfyUI's `pixart` CLIP type yields: the prompt's tokens + EOS, no padding, no mask."""
    encoder = parts.text_encoder
    ids = encoder.tokenizer(prompt.lower(), add_special_tokens=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder.model(input_ids=ids).last_hidden_state


def dit_inputs(parts, cond, uncond):
    latents = torch.zeros(1, 4, 3, 4, 4)
    with spy_forward(parts.transformer) as calls:
        out = denoise(parts.transformer, latents, cond, uncond, options=SamplingOptions(steps=2, cfg=6.0, seed=3))
    return calls, out


def test_unpadded_native_conditioning_gives_identical_dit_inputs(parts):
    cond, uncond = encode_prompts(parts, PROMPT, "")
    real = int(cond.mask.sum())
    assert 2 < real < 120 and int(uncond.mask.sum()) == 1  # the empty negative is EOS alone
    # ComfyUI's output is exactly the real-token rows of the padded encode (the text encoder's
    # tests check that); fed without a mask it must produce the very same DiT inputs
    own_embeds, _ = parts.text_encoder.encode([PROMPT])
    native_cond, native_uncond = own_embeds[:, :real], parts.text_encoder.encode([""])[0][:, :1]
    ours, our_latents = dit_inputs(parts, cond, uncond)
    theirs, their_latents = dit_inputs(parts, native_cond, native_uncond)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert set(a) == set(b)
        for key in a:
            assert a[key] is None and b[key] is None or torch.equal(a[key], b[key]), key
        assert a["encoder_hidden_states"].shape[1] == 120
    assert torch.equal(our_latents, their_latents)


def test_a_real_unpadded_t5_run_matches_to_float_precision(parts):
    cond, uncond = encode_prompts(parts, PROMPT, "")
    ours, _ = dit_inputs(parts, cond, uncond)
    theirs, _ = dit_inputs(parts, native_t5(parts, PROMPT), native_t5(parts, ""))
    for a, b in zip(ours, theirs):
        assert torch.equal(a["encoder_attention_mask"], b["encoder_attention_mask"])
        torch.testing.assert_close(a["encoder_hidden_states"], b["encoder_hidden_states"], atol=1e-5, rtol=1e-5)


def test_conditioning_forms_and_batch_rules():
    embeds = torch.randn(1, 5, 8)
    full = as_text_condition(embeds)
    assert full.embeds.shape == (1, 120, 8) and full.mask.dtype == torch.bool and int(full.mask.sum()) == 5
    masked = as_text_condition((embeds, torch.tensor([[1, 1, 1, 0, 0]])))
    assert masked.embeds[0, 3:].abs().sum() == 0, "masked positions carry zeros on every route"
    assert as_text_condition(full, batch=3).embeds.shape == (3, 120, 8)
    assert isinstance(as_text_condition(TextCondition(full.embeds, full.mask)), TextCondition)
    with pytest.raises(InputError, match="batch 2"):
        as_text_condition(torch.randn(2, 5, 8), batch=3)
    with pytest.raises(InputError, match="batch, tokens, channels"):
        as_text_condition(torch.randn(5, 8))


def test_denoise_rejects_latents_the_model_cannot_take(parts):
    cond, _ = encode_prompts(parts, PROMPT)
    with pytest.raises(InputError, match="5-D"):
        denoise(parts.transformer, torch.zeros(1, 4, 4, 4), cond, options=SamplingOptions(steps=1))
    with pytest.raises(InputError, match="12 input channels but the latents have 5"):
        denoise(parts.transformer, torch.zeros(1, 5, 1, 4, 4), cond, options=SamplingOptions(steps=1))
    with pytest.raises(InputError, match="must be even"):
        denoise(parts.transformer, torch.zeros(1, 4, 1, 5, 4), cond, options=SamplingOptions(steps=1))


def test_denoise_rejects_conditions_the_model_cannot_read(parts):
    from tiny_models import build_dit

    from easyanimate_core.sampling.inpaint import InpaintCondition
    from easyanimate_core.sampling.pipeline import Components, encode_condition

    cond, _ = encode_prompts(parts, PROMPT)
    latents = torch.zeros(1, 4, 3, 4, 4)
    blend_only = InpaintCondition(video_latents=latents, generate_mask=torch.ones(1, 1, 3, 4, 4))
    with pytest.raises(InputError, match="no encoded mask"):
        denoise(parts.transformer, latents, cond, options=SamplingOptions(steps=1), inpaint=blend_only)
    with pytest.raises(InputError, match="no held latents"):
        denoise(build_dit(4), latents, cond, options=SamplingOptions(steps=1), inpaint=InpaintCondition(latents, latents))
    short = encode_condition(parts.vae, 1, 32, 32, start_image=torch.rand(3, 32, 32), inp=True)
    with pytest.raises(InputError, match="covers 1 latent frames"):
        denoise(parts.transformer, latents, cond, options=SamplingOptions(steps=1), inpaint=short)
    with pytest.raises(InputError, match="no start or end image"):
        encode_condition(parts.vae, 9, 32, 32, start_image=torch.rand(3, 32, 32), video=torch.rand(3, 9, 32, 32))
    with pytest.raises(InputError, match="no text encoder"):
        encode_prompts(Components(parts.transformer, parts.vae), PROMPT)


def test_guidance_runs_by_the_one_rule_in_guidance(parts, monkeypatch):
    """denoise asks sampling.guidance.uses_guidance whether to run the negative branch (one rule,
    one place): with the rule switched off, cfg 6 runs the DiT on the conditional batch alone."""
    from easyanimate_core.sampling import guidance

    cond, uncond = encode_prompts(parts, PROMPT, "")
    calls, _ = dit_inputs(parts, cond, uncond)
    assert calls[0]["hidden_states"].shape[0] == 2  # [uncond, cond]
    monkeypatch.setattr(guidance, "uses_guidance", lambda scale: False)
    calls, _ = dit_inputs(parts, cond, uncond)
    assert calls[0]["hidden_states"].shape[0] == 1

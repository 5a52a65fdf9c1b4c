"""Model-level structure: U-ViT pairing (any depth), inpaint channel order, CLIP tokens and masks,
dtypes (bf16, fp8 storage), gradient checkpointing, input errors."""

import pytest
import torch
from tiny_dit import tiny_pixart

from easyanimate_core import InputError
from easyanimate_core.models.transformer import VideoTransformer, uvit_pairs

BASE = tiny_pixart(num_layers=6)
MOTION = {"basic_block_type": "global_motionmodule", "motion_module_type": "Vanilla",
              "motion_module_kwargs_even": {"num_attention_heads": 2, "num_transformer_block": 1, "temporal_position_encoding": True},
              "motion_module_kwargs_odd": {"num_attention_heads": 2, "num_transformer_block": 1, "temporal_position_encoding": True,
                                            "attention_block_types": ["Temporal_Self", "Global_Self"]}}


def _model(**overrides):
    model = VideoTransformer.from_config({**BASE, **MOTION, **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _inputs(b=1, frames=2, channels=4):
    return torch.randn(b, channels, frames, 8, 8), torch.tensor([400] * b), torch.randn(b, 6, 32)


def test_uvit_pairing_release_depth():
    pairs = uvit_pairs(28)
    assert len(pairs) == 13
    assert pairs[0] == (12, 15) and pairs[-1] == (0, 27)
    receivers = {r for _, r in pairs}
    sources = {s for s, _ in pairs}
    assert sources == set(range(13)) and receivers == set(range(15, 28))  # 13 and 14 unpaired
    assert uvit_pairs(4) == [(0, 3)] and uvit_pairs(2) == [] and uvit_pairs(7) == [(1, 5), (0, 6)]


@pytest.mark.parametrize("depth", [6, 7, 28])
def test_uvit_skips_feed_the_lifo_partner(depth):
    """Captured block inputs: input(receiver) = output(receiver - 1) + fc_j(output(source))."""
    model = _model(enable_uvit=True, num_layers=depth)
    outputs, inputs = {}, {}
    for i, block in enumerate(model.transformer_blocks):
        block.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o))
        block.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0]))
    with torch.no_grad():
        model(*_inputs())
    pairs = uvit_pairs(depth)
    assert len(model.long_connect_fc) == len(pairs) == (depth - 2) // 2
    for j, (source, receiver) in enumerate(pairs):
        expected = outputs[receiver - 1] + model.long_connect_fc[j](outputs[source])
        assert torch.allclose(inputs[receiver], expected, atol=1e-6), (source, receiver)
    paired = {r for _, r in pairs}
    for i in range(1, depth):
        if i not in paired:
            assert torch.equal(inputs[i], outputs[i - 1])


def test_inpaint_channels_follow_the_noisy_latents():
    model = _model(in_channels=12)
    x, t, enc = _inputs()
    inpaint = torch.randn(1, 8, 2, 8, 8)
    with torch.no_grad():
        base = model(x, t, enc, inpaint_latents=inpaint)
        weight = model.pos_embed.proj.weight
        saved = weight.clone()
        weight[:, 4:] = 0  # inpaint channels cut: changing the inpaint latents must not matter
        a = model(x, t, enc, inpaint_latents=inpaint)
        assert torch.equal(a, model(x, t, enc, inpaint_latents=torch.randn_like(inpaint)))
        weight.copy_(saved)
        weight[:, :4] = 0  # noisy channels cut: changing the noisy latents must not matter
        assert torch.equal(model(x, t, enc, inpaint_latents=inpaint), model(torch.randn_like(x), t, enc, inpaint_latents=inpaint))
        weight.copy_(saved)
        assert torch.equal(model(x, t, enc, inpaint_latents=inpaint), base)
    with pytest.raises(InputError, match="pass inpaint_latents"):
        model(x, t, enc)


def test_clip_tokens_masks_and_zero_init():
    model = _model(in_channels=12)
    x, t, enc = _inputs(b=2)
    inpaint, clip = torch.randn(2, 8, 2, 8, 8), torch.randn(2, 768)
    with torch.no_grad():
        plain = model(x, t, enc, inpaint_latents=inpaint)
        off = model(x, t, enc, inpaint_latents=inpaint, clip_encoder_hidden_states=clip,
                    clip_attention_mask=torch.zeros(2, 8))
        on = model(x, t, enc, inpaint_latents=inpaint, clip_encoder_hidden_states=clip, clip_attention_mask=torch.ones(2, 8))
        assert torch.allclose(off, plain, atol=1e-6)  # masked CLIP tokens contribute nothing
        assert (on - plain).abs().max() > 1e-3
        mixed = model(x, t, enc, inpaint_latents=inpaint, clip_encoder_hidden_states=clip,
                      clip_attention_mask=torch.tensor([[1.0] * 8, [0.0] * 8]))
        assert torch.allclose(mixed[0], on[0], atol=1e-6) and torch.allclose(mixed[1], plain[1], atol=1e-6)
    fresh = VideoTransformer.from_config({**BASE, **MOTION, "in_channels": 12}).eval()
    with torch.no_grad():  # a fresh CLIP projection is a no-op: the 8 tokens are zero
        assert fresh.clip_projection(clip).abs().max() == 0
    with pytest.raises(InputError, match="without clip_encoder_hidden_states"):
        model(x, t, enc, inpaint_latents=inpaint, clip_attention_mask=torch.ones(2, 8))
    with pytest.raises(InputError, match="no CLIP"):
        _model()(x, t, enc, clip_encoder_hidden_states=clip)


def test_text_mask_and_fully_masked_rows():
    model = _model()
    x, t, enc = _inputs()
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    other = enc.clone()
    other[:, 3:] = torch.randn(1, 3, 32)
    with torch.no_grad():
        assert torch.equal(model(x, t, enc, mask), model(x, t, other, mask))
        assert torch.equal(model(x, t, enc, torch.zeros(1, 6)), model(x, t, enc))  # reference: -10000 everywhere


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.05), (torch.float8_e4m3fn, 0.15)])
def test_low_precision_weights_stay_close_to_fp32(dtype, tol):
    model = _model(in_channels=12)
    x, t, enc = _inputs()
    inpaint = torch.randn(1, 8, 2, 8, 8)
    with torch.no_grad():
        ref = model(x, t, enc, inpaint_latents=inpaint)
        model.set_weight_dtype(dtype, compute_dtype=torch.float32 if dtype != torch.bfloat16 else None)
        if dtype == torch.float8_e4m3fn:
            linear = model.transformer_blocks[0].attn1.to_q
            assert linear.weight.dtype == dtype and linear.bias.dtype == torch.float32
        out = model(x, t, enc, inpaint_latents=inpaint).float()
    rel = ((out - ref).norm() / ref.norm()).item()
    print(f"{dtype}: relative error {rel:.4f}")
    assert rel < tol


def test_compute_dtype_follows_later_casts():
    """A model loaded in bf16 and cast back with .float() (as a trainer may do) computes in fp32."""
    model = _model()
    x, t, enc = _inputs()
    with torch.no_grad():
        ref = model(x, t, enc)
        model.set_weight_dtype(torch.bfloat16)
        assert model.dtype == torch.bfloat16
        model.float()
        assert model.dtype == torch.float32
        out = model(x, t, enc)
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_model_on_cuda_takes_inputs_from_the_cpu():
    """Text states, masks and CLIP embeds may come from encoders kept on the CPU."""
    model = _model(in_channels=12)
    x, t, enc = _inputs()
    inpaint, clip = torch.randn(1, 8, 2, 8, 8), torch.randn(1, 768)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    with torch.no_grad():
        ref = model(x, t, enc, mask, inpaint_latents=inpaint, clip_encoder_hidden_states=clip)
        model.to("cuda").set_weight_dtype(torch.bfloat16)
        out = model(x, t, enc, mask, inpaint_latents=inpaint, clip_encoder_hidden_states=clip)
    assert out.device.type == "cuda" and out.dtype == torch.bfloat16
    assert ((out.float().cpu() - ref).norm() / ref.norm()).item() < 0.05


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _model(enable_uvit=True).train()
    x, t, enc = _inputs()
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.enable_gradient_checkpointing(enabled)
        model(x, t, enc).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_input_errors():
    model = _model()
    x, t, enc = _inputs()
    with pytest.raises(InputError, match="5-D"):
        model(x[:, :, 0], t, enc)
    with pytest.raises(InputError, match="multiples of the patch size"):
        model(torch.randn(1, 4, 2, 9, 8), t, enc)
    with pytest.raises(InputError, match="T5 states"):
        model(x, t, torch.randn(1, 6, 16))
    with pytest.raises(InputError, match="timestep has 3 values"):
        model(x, torch.tensor([1, 2, 3]), enc)
    with pytest.raises(InputError, match="has no released weights"):
        VideoTransformer.from_config({**BASE, "patch_3d": True})
    with pytest.raises(InputError, match="basic_block_type"):
        VideoTransformer.from_config({**BASE, "basic_block_type": "selfattentiontemporal"})


@pytest.mark.parametrize("change,message", [
    ({"norm_type": "layer_norm"}, "norm_type"),
    ({"activation_fn": "geglu"}, "activation_fn"),
    ({"norm_elementwise_affine": True}, "norm_elementwise_affine"),
    ({"sample_size": None}, "must give in_channels, sample_size and patch_size"),
])
def test_config_errors(change, message):
    with pytest.raises(InputError, match=message):
        VideoTransformer.from_config({**BASE, **change})


def test_context_errors():
    x, t, enc = _inputs()
    with pytest.raises(InputError, match="no caption projection"):
        VideoTransformer.from_config({**BASE, "caption_channels": None})(x, t, enc)
    model = _model(in_channels=12)
    inpaint = torch.zeros(1, 8, 2, 8, 8)
    with pytest.raises(InputError, match="masks cover 9 tokens but there are 14"):
        model(x, t, enc, torch.ones(1, 6), inpaint_latents=inpaint, clip_encoder_hidden_states=torch.randn(1, 768),
              clip_attention_mask=torch.ones(1, 3))

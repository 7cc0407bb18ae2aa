"""Quant matmul as real clients call it, inside npusim.torch_npu.install(...): vllm-ascend's W8A8 dynamic and
static linear methods, W4A4 with quint4x2 activations and a transposed packed weight (op-plugin's
test_npu_quant_matmul_a4w4_pertoken, vllm-ascend / sglang W4A4), and torch_npu's own LinearA8W8Quant test
with the parameters set through .data. Device moves (.npu(), .to(device)) are left out: the stand-in runs on
CPU tensors. Each checks the bits against npusim's numpy face (itself checked against spec references in
test_quant_matmul.py) and the values against the float computation."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npusim  # noqa: E402
from npusim import AclnnError  # noqa: E402
from npusim import torch_npu as stand_in  # noqa: E402
from npusim.testing import assert_bitexact  # noqa: E402

to_np = stand_in.to_numpy
ACL_FORMAT_FRACTAL_NZ = 29


def rel_error(out, reference):
    return float((out.float() - reference).norm() / reference.norm())


# ------------------------------------------------------------------ the clients' code, as they write it
def w8a8_static_apply(layer, x):
    """vllm-ascend AscendW8A8LinearMethod.apply after its own quantize step (x is int8 already)."""
    import torch_npu
    return torch_npu.npu_quant_matmul(x, layer.weight, layer.deq_scale, bias=layer.quant_bias,
                                      output_dtype=layer.params_dtype)


def w4a4_apply(layer, x):
    """W4A4 dynamic linear: int4 activations (quint4x2), int4 weight packed as (n, k // 8), passed transposed."""
    import torch_npu
    x_q, pertoken_scale = torch_npu.npu_dynamic_quant(x, dst_type=torch.quint4x2)
    return torch_npu.npu_quant_matmul(x_q, layer.weight_packed.t(), layer.weight_scale,
                                      pertoken_scale=pertoken_scale, output_dtype=torch.bfloat16)


def w4a4_process_weights(layer):
    """vllm-ascend's W4A4 weight packing without its .npu() / .to(original_device) moves."""
    import torch_npu
    layer.weight_packed = torch_npu.npu_convert_weight_to_int4pack(layer.weight.data.to(torch.int32))


def scale_from_float_to_int64(scale):
    """vllm-ascend's helper: the float32 bits of the scale in an int64 (as ModelSlim checkpoints store deq_scale)."""
    return torch.from_numpy(np.frombuffer(scale.to(torch.float32).numpy().tobytes(), dtype=np.int32).astype(np.int64))


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("params_dtype", [torch.float16, torch.bfloat16])
def test_w8a8_static_int64_scale_int32_bias(params_dtype):
    torch.manual_seed(1)
    tokens, k, n = 16, 256, 128
    w = torch.randn(n, k)
    w_scale = w.abs().amax(dim=1) / 127
    in_scale = 0.05
    layer = torch.nn.Module()
    layer.params_dtype = params_dtype
    weight = torch.round(w / w_scale[:, None]).clamp(-128, 127).to(torch.int8)
    deq = (in_scale * w_scale).to(torch.float32)
    # fp16 checkpoints carry deq_scale as int64, bf16 ones as float32 (AscendW8A8LinearMethod.get_perchannel_param)
    layer.deq_scale = scale_from_float_to_int64(deq) if params_dtype == torch.float16 else deq
    layer.quant_bias = torch.randint(-2000, 2000, (n,), dtype=torch.int32)
    x = torch.randn(tokens, k)
    x_q = torch.round(x / in_scale).clamp(-128, 127).to(torch.int8)
    with stand_in.install("atlas-a2"):
        import torch_npu
        layer.weight = torch_npu.npu_format_cast(weight.t().contiguous(), ACL_FORMAT_FRACTAL_NZ)
        out = w8a8_static_apply(layer, x_q)
    assert out.dtype == params_dtype and out.shape == (tokens, n)
    expected = npusim.npu_quant_matmul(to_np(x_q), to_np(layer.weight), to_np(layer.deq_scale),
                                       bias=to_np(layer.quant_bias), output_dtype=str(params_dtype)[6:])
    assert_bitexact(out, expected)
    reference = (x_q.float() @ layer.weight.float() + layer.quant_bias.float()) * deq
    assert rel_error(out, reference) < 0.01


@pytest.mark.parametrize("product", ["atlas-a2", "atlas-a3"])
def test_w4a4_quint4x2_activations_transposed_packed_weight(product):
    torch.manual_seed(2)
    tokens, k, n = 24, 256, 64
    w = torch.randn(n, k)
    w_scale = w.abs().amax(dim=1) / 7
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.round(w / w_scale[:, None]).clamp(-8, 7).to(torch.int8), False)
    layer.weight_scale = w_scale.to(torch.float32)
    x = torch.randn(tokens, k, dtype=torch.bfloat16)
    with stand_in.install(product):
        w4a4_process_weights(layer)
        out = w4a4_apply(layer, x)
        import torch_npu
        x_q_t, pertoken_t = torch_npu.npu_dynamic_quant(x, dst_type=torch.quint4x2)
    assert layer.weight_packed.shape == (n, k // 8) and out.dtype == torch.bfloat16 and out.shape == (tokens, n)
    # the same bits as the (k, n // 8) layout through the numpy face
    x_q, pertoken = npusim.npu_dynamic_quant(to_np(x), dst_type="quint4x2", product=product)
    w_kn = npusim.formats.pack_int4(to_np(layer.weight).T, "int32")
    expected = npusim.npu_quant_matmul(x_q, w_kn, to_np(layer.weight_scale), pertoken_scale=pertoken,
                                       output_dtype="bfloat16", product=product)
    assert_bitexact(out, expected)
    w_deq = (layer.weight.float() * layer.weight_scale[:, None]).t()
    x_deq = torch.from_numpy(npusim.formats.unpack_int4(to_np(x_q_t), "int32")).float() * pertoken_t[:, None]
    assert rel_error(out, x_deq @ w_deq) < 0.01      # exact up to float32 sums and the bf16 output
    assert rel_error(out, x.float() @ w_deq) < 0.2   # int4 activations: ~13% error against float x


def test_linear_a8w8_quant_parameters_set_through_data():
    """torch_npu's test_linear_a8w8_quant: the module equals npu_quant_matmul(x1, x2.t(), scale)."""
    x1 = torch.randint(-1, 1, (1, 5), dtype=torch.int8)
    x2 = torch.randint(-1, 1, (127, 5), dtype=torch.int8)
    scale = torch.randn(1, dtype=torch.float32)
    with stand_in.install("atlas-a2"):
        import torch_npu
        from torch_npu.contrib.module import LinearA8W8Quant
        for out_dtype in (None, torch.float16, torch.bfloat16):
            supported_output = torch_npu.npu_quant_matmul(x1, x2.t(), scale, output_dtype=out_dtype)
            model = LinearA8W8Quant(5, 127, bias=False, offset=False, pertoken_scale=False, output_dtype=out_dtype)
            model.weight.data = x2
            model.scale.data = scale
            assert torch.equal(model(x1), supported_output)
        model = LinearA8W8Quant(5, 127, bias=True, offset=False, pertoken_scale=True, output_dtype=torch.bfloat16)
        pertoken = torch.rand(1) + 0.5
        model.weight.data, model.scale.data, model.pertoken_scale.data = x2, scale, pertoken
        model.bias.data = torch.randint(-9, 9, (127,), dtype=torch.int32)
        expected = torch_npu.npu_quant_matmul(x1, x2.t(), scale, pertoken_scale=pertoken, bias=model.bias,
                                              output_dtype=torch.bfloat16)
        assert torch.equal(model(x1).view(torch.int16), expected.view(torch.int16))
        model.output_dtype = torch.int32                # torch_npu's test expects this to fail
        with pytest.raises(AclnnError):
            model(x1)


def test_torch_npu_int4_layout_rules():
    k, n = 64, 16
    x1 = stand_in.from_numpy(npusim.formats.pack_int4(np.ones((4, k), np.int8), "int32"))
    w = torch.randint(-8, 8, (n, k), dtype=torch.int32)
    packed = stand_in.npu_convert_weight_to_int4pack(w)
    scale = torch.ones(1, dtype=torch.float32)
    out = stand_in.npu_quant_matmul(x1, packed.t(), scale, pertoken_scale=torch.ones(4), output_dtype=torch.float16)
    assert out.shape == (4, n)
    with pytest.raises(AclnnError, match="transpose of a contiguous") as ei:     # a contiguous (k // 8, n)
        stand_in.npu_quant_matmul(x1, packed.t().contiguous(), scale, output_dtype=torch.float16)
    assert ei.value.param == "x2"
    with pytest.raises(AclnnError, match="contiguous") as ei:
        stand_in.npu_quant_matmul(torch.cat([x1, x1], 1)[:, ::2], packed.t(), scale, output_dtype=torch.float16)
    assert ei.value.param == "x1"
    with pytest.raises(AclnnError, match="contiguous"):
        stand_in.npu_convert_weight_to_int4pack(w.t())
    nz = stand_in.npu_format_cast(w, 29)
    assert torch.equal(nz, w) and stand_in.get_npu_format(nz) == 29 and stand_in.npu_format_cast(nz, 29) is nz
    with pytest.raises(stand_in.NotEmulatedError, match="not emulated"):
        stand_in.npu_format_cast(w, 3)
    with pytest.raises(stand_in.NotEmulatedError):
        stand_in.npu_format_cast(w, 29, customize_dtype=torch.float16)

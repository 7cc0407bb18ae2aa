"""A W8A8 dynamic linear test written the way vllm-ascend writes it (tests/ut/quantization/methods/
.../test_w8a8_dynamic.py: a layer with an int8 weight transposed to (in, out) and a per-channel weight
scale in the model dtype, bf16 activations, torch_npu.npu_dynamic_quant then torch_npu.npu_quant_matmul
with the per-token scale and bf16 output), but checking numbers instead of mock call counts.

This module imports torch_npu at its top, as vllm-ascend's code does. There is no NPU here: npusim's
pytest plugin installs its stand-in for the whole session (pyproject: `npusim_torch_npu = true`; on the
command line `pytest --npusim-torch-npu`), before pytest imports this module, and the `npusim_torch_npu`
fixture selects the product per test (the npusim_product marker, else --npusim-product, else atlas-a2).
"""
import pytest

torch = pytest.importorskip("torch")

import torch_npu  # noqa: E402  (npusim's stand-in, see the module docstring)

import npusim  # noqa: E402
from npusim.testing import assert_bitexact  # noqa: E402


class W8A8DynamicLinearMethod:
    """The code under test: vllm-ascend's AscendW8A8DynamicLinearMethod.apply for a 2-D input."""

    def apply(self, layer, x, bias=None):
        quantized_x, pertoken_scale = torch_npu.npu_dynamic_quant(x, dst_type=torch.int8)
        return torch_npu.npu_quant_matmul(quantized_x, layer.weight, layer.weight_scale,
                                          pertoken_scale=pertoken_scale, bias=bias, output_dtype=x.dtype)


def make_layer(input_size, output_size, params_dtype):
    """A quantized linear layer after process_weights_after_loading: weight int8 (in, out), scale (out,)."""
    w = torch.randn(output_size, input_size)
    weight_scale = w.abs().amax(dim=1) / 127
    layer = torch.nn.Module()
    q = torch.round(w / weight_scale[:, None]).clamp(-128, 127).to(torch.int8)
    layer.weight = torch.nn.Parameter(q.t().contiguous(), requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(weight_scale.to(params_dtype), requires_grad=False)
    return layer


def test_torch_npu_is_the_stand_in(npusim_torch_npu):
    assert torch_npu is npusim_torch_npu and torch_npu.__name__ == "npusim.torch_npu"


@pytest.mark.parametrize("product", [pytest.param(p, marks=pytest.mark.npusim_product(p))
                                     for p in ("atlas-a2", "atlas-a3")])
def test_apply_w8a8_dynamic_bf16(npusim_torch_npu, product):
    assert torch_npu.current_product() == product
    torch.manual_seed(0)
    tokens, input_size, output_size = 32, 128, 256
    layer = make_layer(input_size, output_size, torch.bfloat16)
    x = torch.randn(tokens, input_size, dtype=torch.bfloat16)
    bias = torch.randn(output_size, dtype=torch.float32)

    output = W8A8DynamicLinearMethod().apply(layer, x, bias)

    assert output.shape == (tokens, output_size) and output.dtype == torch.bfloat16
    # bit-exact: the NPU's arithmetic, step by step, through npusim's numpy face
    to_np = torch_npu.to_numpy
    qx, pertoken = npusim.npu_dynamic_quant(to_np(x), product=product)
    expected = npusim.npu_quant_matmul(qx, to_np(layer.weight), to_np(layer.weight_scale), pertoken_scale=pertoken,
                                       bias=to_np(bias), output_dtype="bfloat16", product=product)
    assert_bitexact(output, expected)
    # and close to the float computation it approximates (int8 activations: ~1% relative error)
    reference = x.float() @ (layer.weight.float() * layer.weight_scale.float()) + bias
    rel = (output.float() - reference).norm() / reference.norm()
    assert rel < 0.02, float(rel)

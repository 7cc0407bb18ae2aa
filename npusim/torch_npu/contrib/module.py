"""torch_npu.contrib.module in npusim's stand-in: LinearA8W8Quant and LinearQuant as torch.nn.Modules."""
from __future__ import annotations

import torch
from torch.nn import Parameter

from npusim.torch_npu import _missing_names

__all__ = ["LinearA8W8Quant", "LinearQuant"]

_PARAMS = ("weight", "scale", "offset", "pertoken_scale", "bias")


def _takes_saved_shape(name: str, saved: torch.Tensor) -> bool:
    """Whether a saved parameter's shape may replace the layer's own: a 1-D pertoken_scale (m rows of the input
    it was set for), a per-tensor (1,) scale or offset."""
    return saved.dim() == 1 and (name == "pertoken_scale" or (name in ("scale", "offset") and saved.numel() == 1))


class LinearA8W8Quant(torch.nn.Module):
    """torch_npu.contrib.module.LinearA8W8Quant(in_features, out_features, *, bias=True, offset=False,
    pertoken_scale=False, output_dtype=None) on CPU tensors, bit-exact to npusim's numpy face.

    Parameters (requires_grad False), set through `.data` as torch_npu's tests do: weight (out, in) int8,
    scale (out,) float32 / int64 (npu_trans_quant_param) / bfloat16, offset (out,) float32, pertoken_scale
    (m,) float32 of the input to come, bias (out,) int32 (or a float bias where npu_quant_matmul takes one).
    forward(x1) follows torch_npu: after the module's own rules (npusim.quant_matmul's), a float32 scale is
    packed with torch_npu.npu_trans_quant_param(scale, offset) unless pertoken_scale is set or the output is
    bfloat16, then torch_npu.npu_quant_matmul(x1, weight^T, ...) runs on the product
    npusim.torch_npu.current_product() names; both are looked up on the stand-in module when called, as torch_npu's
    forward does, so mock.patch("torch_npu.<name>") sees them. Under torch.compile inside install() the forward is
    one op, torch.ops.npu.npusim_linear_a8w8_quant (npusim.quant_matmul.linear_a8w8_quant_forward).
    Initial values (torch_npu leaves them uninitialised; the dtypes are its): weight 0 float32, so that a forward
    before an int8 weight is set fails as on the NPU, scale 1, offset 0, pertoken_scale 1 (shape (out,), as
    torch_npu), bias 0 int32. Loading a state dict adopts the saved tensors' dtypes (an int8 weight, an int64
    scale), where torch's default copy would convert them into these; shapes are checked as torch checks them
    (a size mismatch is an error), except a per-tensor (1,) scale or offset and a pertoken_scale of the
    checkpoint's own length.
    device: CPU only (another device raises NotEmulatedError); dtype is accepted and unused, as in torch_npu.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, offset: bool = False,
                 pertoken_scale: bool = False, device=None, dtype=None, output_dtype=None) -> None:
        super().__init__()
        if device is not None and torch.device(device).type != "cpu":
            from npusim.torch_npu import NotEmulatedError
            raise NotEmulatedError(f"LinearA8W8Quant: device '{device}' is not emulated; npusim runs on the CPU")
        self.in_features = in_features
        self.out_features = out_features
        self.output_dtype = output_dtype
        self.weight = Parameter(torch.zeros((out_features, in_features), dtype=torch.float32), False)
        self.scale = Parameter(torch.ones(out_features, dtype=torch.float32), False)
        for name, wanted, init in (("offset", offset, torch.zeros), ("pertoken_scale", pertoken_scale, torch.ones)):
            if wanted:
                setattr(self, name, Parameter(init(out_features, dtype=torch.float32), False))
            else:
                self.register_parameter(name, None)
        if bias:
            self.bias = Parameter(torch.zeros(out_features, dtype=torch.int32), False)
        else:
            self.register_parameter("bias", None)

    def forward(self, x1: torch.Tensor) -> torch.Tensor:
        from npusim import torch_npu as stand_in
        params = [getattr(self, name) for name in _PARAMS]
        # torch.compile (and fake tensors): the op, as one node. Meta tensors take the two operators as eager
        # tensors do (each shapes its output), so that a shapes-only record hears of both launches
        if stand_in._traced([x1, *params]) and not stand_in._on_meta(x1):
            return torch.ops.npu.npusim_linear_a8w8_quant(x1, *params, output_dtype=self.output_dtype)
        # torch_npu's forward: the two operators, looked up on the torch_npu module as they are called, so that
        # mock.patch("torch_npu.npu_quant_matmul") and wraps= spies see these calls; the module's own rules first
        weight, scale, offset, pertoken_scale, bias = params
        if stand_in._linear_a8w8_quant_packs_scale(x1, weight, scale, offset, pertoken_scale, self.output_dtype):
            scale = stand_in.npu_trans_quant_param(scale, offset)
        return stand_in.npu_quant_matmul(x1, weight.transpose(-2, -1), scale, offset=offset,
                                         pertoken_scale=pertoken_scale, bias=bias, output_dtype=self.output_dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # quantized layers hold int8/int64/... tensors: take the saved dtype instead of casting to the initial
        # one. The shape stays, so torch reports a checkpoint of another layer size, except where this layer's
        # shape may differ: a per-tensor scale / offset (1,), and pertoken_scale (one per row of the input)
        for name in _PARAMS:
            param, saved = getattr(self, name), state_dict.get(prefix + name)
            if param is None or not isinstance(saved, torch.Tensor):
                continue
            shape = saved.shape if _takes_saved_shape(name, saved) else param.shape
            if (saved.dtype, shape) != (param.dtype, param.shape):
                param.data = torch.empty(shape, dtype=saved.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"offset={self.offset is not None}, pertoken_scale={self.pertoken_scale is not None}, "
                f"output_dtype={self.output_dtype}")


class LinearQuant(LinearA8W8Quant):
    """torch_npu.contrib.module.LinearQuant(in_features, out_features, *, bias=True, offset=False,
    pertoken_scale=False, device=None, dtype=None, output_dtype=None), the module torch_npu's docs name in place of
    LinearA8W8Quant: the same parameters and initial values, int8 or int4 (int32-packed x1 (m, k // 8) and
    weight (n, k // 8)). Its forward, as torch_npu's (torch_npu/contrib/module/linear_quant.py, read in
    Ascend/pytorch@1373806): x1 and weight must both be int8 or both int32 (ValueError, a Python check before any
    kernel); a float32 scale without pertoken_scale is packed with npu_trans_quant_param(scale, offset) whatever
    the output dtype (LinearA8W8Quant leaves it float for bfloat16 output); then npu_quant_matmul(x1,
    weight.transpose(-2, -1), ...). It runs the stand-in's two functions, both traced by torch.compile."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, offset: bool = False,
                 pertoken_scale: bool = False, device=None, dtype=None, output_dtype=None) -> None:
        super().__init__(in_features, out_features, bias, offset=offset, pertoken_scale=pertoken_scale,
                         device=device, dtype=dtype, output_dtype=output_dtype)

    def forward(self, x1: torch.Tensor) -> torch.Tensor:
        from npusim import torch_npu as stand_in
        if not ((x1.dtype == torch.int32 and self.weight.dtype == torch.int32)
                or (x1.dtype == torch.int8 and self.weight.dtype == torch.int8)):
            raise ValueError(f"LinearQuant: the input and the weight must both be torch.int32 or both torch.int8, "
                             f"got input {x1.dtype} and weight {self.weight.dtype} (torch_npu's check)")
        scale = self.scale
        if scale.dtype == torch.float32 and self.pertoken_scale is None:
            scale = stand_in.npu_trans_quant_param(scale, self.offset)
        return stand_in.npu_quant_matmul(x1, self.weight.transpose(-2, -1), scale, offset=self.offset,
                                         pertoken_scale=self.pertoken_scale, bias=self.bias,
                                         output_dtype=self.output_dtype)


# torch_npu.contrib.module's other classes: say so, as the stand-in's top level does
__getattr__ = _missing_names("torch_npu.contrib.module", "it emulates contrib.module.LinearA8W8Quant and LinearQuant")

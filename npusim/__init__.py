"""npusim: bit-exact CPU emulation of Ascend NPU quantization operators.

Operators come in two faces over one core: torch_npu-style functions here (npusim.npu_dynamic_quant,
...), and the aclnn two-phase calls in npusim.aclnn. Every operator also has a plan (its tiling
decision from shapes and dtypes alone), which the performance model in `perfmodel` costs.
"""
from npusim import _parallel, aclnn, formats, products, testing  # noqa: F401 (_parallel: OpenMP across fork)
from npusim.errors import ACLNN_ERR_INNER_TILING_ERROR, ACLNN_ERR_PARAM_INVALID, ACLNN_ERR_PARAM_NULLPTR, AclnnError
from npusim.plan import Plan, TensorSpec, make_plan
from npusim.products import get_product

from npusim.dynamic_quant import *  # noqa: F401,F403
from npusim.indexer_compress_epilog import *  # noqa: F401,F403
from npusim.fake_quant import *  # noqa: F401,F403
from npusim.quant_matmul import *  # noqa: F401,F403
from npusim.moe_init_routing_quant import *  # noqa: F401,F403

__version__ = "0.1.0"

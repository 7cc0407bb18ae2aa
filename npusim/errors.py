"""Errors with aclnn status codes.

Every invalid call raises AclnnError before anything is written. The message names the operator,
the parameter, the rule broken and the product, so a user can act on it without reading our code.
"""

import contextlib
import re

ACLNN_SUCCESS = 0
ACLNN_ERR_PARAM_NULLPTR = 161001
ACLNN_ERR_PARAM_INVALID = 161002
ACLNN_ERR_INNER_TILING_ERROR = 561002     # a rule the operator's tiling checks (where its aclnn doc says so)


class AclnnError(ValueError, RuntimeError):
    """An aclnn call rejected its arguments. `.status` is the aclnn status code; `.op`, `.param`, `.product`
    and `.rule` (the message without them) are the parts of the message. A ValueError, and a RuntimeError too:
    what torch_npu raises when an aclnn call fails ("... error code is 161002"), so that tests written against
    torch_npu catch it where they expect it. `.not_emulated` is True when the NPU
    may take the call and npusim does not model it (the rule says what); the torch face raises those as
    npusim.torch_npu.NotEmulatedError."""

    def __init__(self, message: str, status: int = ACLNN_ERR_PARAM_INVALID, *,
                 op: str | None = None, param: str | None = None, product: str | None = None,
                 not_emulated: bool = False):
        self.status = status
        self.not_emulated = not_emulated
        self.rule = message
        self.op = op
        self.param = param
        self.product = product
        parts = []
        if op:
            parts.append(op)
        if param:
            parts.append(f"parameter '{param}'")
        head = ": ".join([", ".join(parts)]) if parts else ""
        where = f" (product {product})" if product else ""
        text = f"{head}: {message}{where}" if head else f"{message}{where}"
        super().__init__(f"[aclnn {status}] {text}")


def invalid(op: str, param: str, rule: str, product: str | None = None,
            status: int = ACLNN_ERR_PARAM_INVALID) -> AclnnError:
    """ACLNN_ERR_PARAM_INVALID (161002; or `status`, e.g. ACLNN_ERR_INNER_TILING_ERROR where the operator's aclnn
    doc lists a rule under it) for `param` of `op` breaking `rule`."""
    return AclnnError(rule, status, op=op, param=param, product=product)


def nullptr(op: str, param: str, product: str | None = None) -> AclnnError:
    """ACLNN_ERR_PARAM_NULLPTR (161001): a required tensor is None."""
    return AclnnError("is required but got None (nullptr)", ACLNN_ERR_PARAM_NULLPTR,
                      op=op, param=param, product=product)


def not_emulated(op: str, param: str, rule: str, product: str | None = None) -> AclnnError:
    """ACLNN_ERR_PARAM_INVALID (161002) for a call npusim does not model, though the NPU may take it: `rule` says
    what is not emulated."""
    return AclnnError(rule, ACLNN_ERR_PARAM_INVALID, op=op, param=param, product=product, not_emulated=True)


@contextlib.contextmanager
def params_named(names: dict, in_rules: bool = False):
    """AclnnErrors raised inside name their parameter as `names` maps it (a face's own names for the core's, e.g.
    aclnn's smoothScalesOptional for smooth_scales); status, product and not_emulated stay, and so does the rule,
    unless in_rules: then the names it mentions as whole words are the face's too ('the dtype of x' -> 'of
    input'; for names no rule uses in another sense)."""
    try:
        yield
    except AclnnError as exc:
        if exc.param not in names and not in_rules:
            raise
        rule = exc.rule
        if in_rules:
            for core, face in names.items():
                rule = re.sub(rf"(?<![\w'.]){re.escape(core)}(?![\w'(])", face, rule)
        raise AclnnError(rule, exc.status, op=exc.op, param=names.get(exc.param, exc.param), product=exc.product,
                         not_emulated=exc.not_emulated).with_traceback(exc.__traceback__) from None

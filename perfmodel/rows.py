"""Predictions as table rows: the layer `perfmodel.sweep` and `perfmodel.compare` share.

A row is a flat dict: status 'ok' with the Prediction's fields (latency_us, head_us, core_us, chip_us,
bound, bytes, flops, block_dim, tiling_key, achieved rates, soc, pipe_<pipe>_us), or status 'skipped'
with the reason. One bad point never stops a sweep or a comparison.
"""
from __future__ import annotations

import math

from perfmodel.model import PIPES
from perfmodel.predict import predict_many

__all__ = ["ROW_COLUMNS", "predict_rows"]

ROW_COLUMNS = ["status", "reason", "soc", "latency_us", "head_us", "core_us", "chip_us", "bound", "bytes_read",
               "bytes_written", "flops", "block_dim", "tiling_key", "achieved_GBps", "achieved_TOPS"] + \
              [f"pipe_{p}_us" for p in PIPES]


def _row(pred) -> dict:
    row = {"status": "ok", "reason": "", "soc": str(getattr(pred, "soc", ""))}
    for key in ROW_COLUMNS[3:-len(PIPES)]:
        row[key] = getattr(pred, key, None)
    pipes = getattr(pred, "pipes_us", None) or {}
    for p in PIPES:
        row[f"pipe_{p}_us"] = pipes.get(p, math.nan)
    row["kernels"] = list(getattr(pred, "kernels", None) or [])    # (name, latency_us) per launched kernel
    row["variant"] = str((getattr(pred, "tiles", None) or {}).get("variant", ""))   # the kernel variant, if named
    return row


def _failed(exc) -> dict:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    # the first line, whole unless a hostile value makes it huge (a cell of the CSV, a line of the report)
    return {"status": "skipped", "reason": reason if len(reason) <= 600 else reason[:599] + "…"}


def predict_rows(op: str, product: str, args_list: list, calibration=None, l2: str = "cold") -> list[dict]:
    """One row per argument dict of one operator on one product, through the batched
    perfmodel.predict_many (results identical to perfmodel.predict; l2 as there)."""
    try:
        preds = predict_many(op, product, args_list, calibration=calibration, l2=l2, errors="return")
    except Exception as exc:    # noqa: BLE001 -- e.g. op not supported on the product: every point
        return [_failed(exc)] * len(args_list)
    return [_failed(p) if isinstance(p, BaseException) else _row(p) for p in preds]

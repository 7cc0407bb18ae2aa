"""perfmodel: cycle-aware latency prediction for npusim's operators from their plans.

    import perfmodel
    from perfmodel import TensorSpec
    p = perfmodel.predict("npu_dynamic_quant", product="Ascend910B4",
                          x=TensorSpec((4096, 512), "float16"), dst_type="int8")
    p.latency_us, p.bound, p.pipes_us
    ps = perfmodel.predict_many("npu_dynamic_quant", "Ascend910B4",
                                [dict(x=TensorSpec((t, 512), "float16")) for t in range(1, 10001)])
    with perfmodel.record() as rec:       # every launch npusim makes in the block, predicted
        with perfmodel.section("decode b=16"):      # (optional) each step's own total
            ...
    print(rec.report())

Model: perfmodel.model (combining), perfmodel.hw (per-SoC primitives from perfmodel/data/),
perfmodel.ops (cost builders per operator), perfmodel.calibration (fitted parameters).
"""
from npusim.plan import TensorSpec

from perfmodel import calibration
from perfmodel.calibration import Calibration
from perfmodel.fitting import calibrate
from perfmodel.model import Prediction
from perfmodel.predict import OPERATORS, predict, predict_many, predict_plan, supported_products
from perfmodel.record import Recording, record, section

__all__ = ["TensorSpec", "Prediction", "predict", "predict_many", "predict_plan", "record", "section", "Recording",
           "OPERATORS",
           "supported_products", "calibration", "Calibration", "calibrate"]

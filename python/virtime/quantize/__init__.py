"""INT8 translators: post-training quantization calibrated on the user's slides, with an
accuracy check against fp32 written into the model card (see :mod:`virtime.models.int8` for the
gate that translation applies).

>>> from virtime.quantize import quantize_translator
>>> result = quantize_translator(model, ["a.svs", "b.svs"], "int8/gigatime")  # doctest: +SKIP
>>> result.passed, result.xml                     # the card: int8/gigatime.json
"""

from __future__ import annotations

from virtime.quantize.agreement import ChannelAgreement
from virtime.quantize.calibration import CalibrationSet, calibration_windows
from virtime.quantize.ptq import QuantizeConfig, QuantizeResult, quantize_translator

__all__ = ["CalibrationSet", "ChannelAgreement", "QuantizeConfig", "QuantizeResult",
           "calibration_windows", "quantize_translator"]

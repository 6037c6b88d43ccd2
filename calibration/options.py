"""The choices `edge-calibrate` offers, apart from the code that needs onnx to act on them, so
the command line (and `collect`, which runs on the device) loads without the `[export]` extra."""

from __future__ import annotations

#: cpu: u8 activations / s8 weights for ONNX Runtime; tensorrt: symmetric s8 Q/DQ; openvino: `hoi`
#: in symmetric s8 Q/DQ for OpenVINO, the caption graphs as for cpu, on ONNX Runtime
#: (`qdq.GRAPH_FLAVOURS`).
TARGETS = ("cpu", "tensorrt", "openvino")
CALIBRATION_METHOD_NAMES = ("minmax", "entropy", "percentile")
GRAPHS = ("hoi", "cap_encoder", "dec_step")
#: Default output-error budgets (mean relative L2 of the worst output on held-out inputs). The
#: CNN tolerates more than the decoder, whose errors compound over the caption's steps.
DEFAULT_BUDGETS = {"hoi": 0.10, "cap_encoder": 0.05, "dec_step": 0.05}

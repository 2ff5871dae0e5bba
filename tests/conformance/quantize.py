"""Quantizes the passing float conformance cases for loam's int8 conformance test
(tests/tests/onnx_conformance/int8.rs).

    python3 tests/conformance/quantize.py PREPARED ALLOW_LIST OUTPUT

PREPARED is the layout `prepare.py` wrote; ALLOW_LIST names the cases (`suite/case`) that pass
in float. For each of them whose graph inputs and outputs are float and that holds an op loam
runs in int8, OUTPUT gets OUTPUT/<suite>/<case>/model.onnx quantized by ONNX Runtime's
`quantize_static` (QDQ, per-channel, int8 activations and weights, MinMax calibration on the
case's own test_data_set inputs) and the case's test_data_set_N/input_K.pb files for the
quantized model's inputs. OUTPUT/skipped.txt says, one `suite/case: reason` a line, why each
other listed case was not quantized.

Node cases pass weights as graph inputs; an input after the first that feeds a weight
(Conv/Gemm/MatMul's second or third input, and the like), another constant (Clip's bounds,
Pad's value) or is not float is baked in as an
initializer holding test_data_set_0's value, so the quantizer sees the weights a deployed model
has (the float test does the same when loam refuses the plain model).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# The ops loam runs as native int8 ops (or on int8 tensors directly) that ONNX Runtime's
# quantizer puts in QDQ form; a model without one of them has nothing to check.
QUANTIZABLE = {
    "Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Add", "Mul", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
    "Softmax", "Concat", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Pad",
    "ReduceMean", "PRelu",
}

# (op, input index) pairs that are weights or other constants in a deployed model.
CONSTANT_INPUTS = {
    ("Pad", 2), ("Clip", 1), ("Clip", 2),
    ("Conv", 1), ("Conv", 2), ("ConvTranspose", 1), ("ConvTranspose", 2),
    ("Gemm", 1), ("Gemm", 2), ("MatMul", 1), ("PRelu", 1),
    ("BatchNormalization", 1), ("BatchNormalization", 2), ("BatchNormalization", 3),
    ("BatchNormalization", 4),
}


def read_tensor(path: str) -> TensorProto:
    t = TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def data_sets(case_dir: str) -> list[str]:
    sets = [e for e in os.listdir(case_dir) if e.startswith("test_data_set_")]
    sets.sort(key=lambda s: int(s.rsplit("_", 1)[1]))
    return [os.path.join(case_dir, s) for s in sets]


def summary(e: Exception) -> str:
    """An exception in one line, without the temporary paths ONNX Runtime's messages hold."""
    text = str(e).strip().splitlines()
    text = re.sub(r"/tmp/\S*", "...", text[0] if text else "")
    return f"{type(e).__name__}: {text}"[:160]


def is_float(value_info) -> bool:
    t = value_info.type
    return t.HasField("tensor_type") and t.tensor_type.elem_type == TensorProto.FLOAT


class Reader:
    """The calibration data: every data set's inputs, by input name."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)

    def rewind(self):
        pass


def quantize_case(case_dir: str, out_dir: str) -> str | None:
    """Writes the quantized case to `out_dir`; the reason it was skipped otherwise."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(os.path.join(case_dir, "model.onnx"))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    sets = data_sets(case_dir)
    if not sets:
        return "no test data set"
    if not any(n.op_type in QUANTIZABLE for n in graph.node):
        return "no op loam runs in int8"
    if not all(is_float(o) for o in graph.output):
        return "an output is not float"
    weights = set()
    for node in graph.node:
        for k, name in enumerate(node.input):
            if (node.op_type, k) in CONSTANT_INPUTS:
                weights.add(name)
    baked = [
        k for k, i in enumerate(inputs) if k > 0 and (i.name in weights or not is_float(i))
    ]
    kept = [k for k in range(len(inputs)) if k not in baked]
    if not all(is_float(inputs[k]) for k in kept):
        return "an input is not float"
    first = sets[0]
    for k in baked:
        t = read_tensor(os.path.join(first, f"input_{k}.pb"))
        t.name = inputs[k].name
        graph.initializer.append(t)
    for k in sorted(baked, reverse=True):
        graph.input.remove(inputs[k])
    feeds = []
    for s in sets:
        feeds.append(
            {
                inputs[k].name: numpy_helper.to_array(
                    read_tensor(os.path.join(s, f"input_{k}.pb"))
                )
                for k in kept
            }
        )
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = os.path.join(tmp, "float.onnx")
        onnx.save(model, float_path)
        q_path = os.path.join(out_dir, "model.onnx")
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()
            ):
                quantize_static(
                    float_path,
                    q_path,
                    Reader(feeds),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    # Pooling, reshapes and the like are otherwise quantized only after an
                    # op that is, which leaves the single-op cases float.
                    extra_options={"ForceQuantizeNoInputCheck": True},
                )
        except Exception as e:  # noqa: BLE001 - the quantizer raises whatever it meets
            shutil.rmtree(out_dir, ignore_errors=True)
            return f"the quantizer refused it: {summary(e)}"
    quantized = onnx.load(q_path)
    if not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node):
        shutil.rmtree(out_dir, ignore_errors=True)
        return "the quantizer quantized no node"
    for i, s in enumerate(sets):
        set_out = os.path.join(out_dir, f"test_data_set_{i}")
        os.makedirs(set_out, exist_ok=True)
        for j, k in enumerate(kept):
            shutil.copyfile(os.path.join(s, f"input_{k}.pb"), os.path.join(set_out, f"input_{j}.pb"))
    if baked:
        with open(os.path.join(out_dir, "baked"), "w") as f:
            f.write(" ".join(inputs[k].name for k in baked) + "\n")
    return None


def main() -> None:
    import onnxruntime

    prepared, allow, out = sys.argv[1], sys.argv[2], sys.argv[3]
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    onnxruntime.set_default_logger_severity(3)
    with open(allow) as f:
        cases = [l.split("#")[0].strip() for l in f]
    cases = [c for c in cases if c]
    os.makedirs(out, exist_ok=True)
    skipped = []
    for case in cases:
        case_dir = os.path.join(prepared, case)
        if not os.path.isfile(os.path.join(case_dir, "model.onnx")):
            skipped.append(f"{case}: not in the prepared data")
            continue
        try:
            reason = quantize_case(case_dir, os.path.join(out, case))
        except Exception as e:  # noqa: BLE001 - one bad case must not stop the rest
            shutil.rmtree(os.path.join(out, case), ignore_errors=True)
            reason = summary(e)
        if reason is not None:
            skipped.append(f"{case}: {reason}")
    with open(os.path.join(out, "skipped.txt"), "w") as f:
        f.write("".join(line.replace("\n", " ") + "\n" for line in skipped))


if __name__ == "__main__":
    main()

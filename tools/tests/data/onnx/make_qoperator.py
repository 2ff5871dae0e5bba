"""Writes the QOperator-form test models: quantized ONNX as ONNX Runtime's quantizer writes it
with `quant_format=QOperator` (QLinearConv, QLinearMatMul and the `com.microsoft` QGemm,
QLinearAdd, QLinearMul, QLinearConcat, QLinearSigmoid, QLinearLeakyRelu, QLinearAveragePool,
QLinearGlobalAveragePool, QLinearSoftmax), plus a dynamically quantized model the importer
must refuse with a clear message.

- `pytorch-cnn.qop-{int8,uint8}.onnx`: `pytorch-cnn.onnx` (see make_pytorch_cnn.py) quantized
  per channel on 32 seeded random images, int8 or uint8 activations.
- `branches.onnx` and `branches.qop-uint8.onnx`: a small float graph built here with the ops
  the CNN lacks (MatMul, Sigmoid, LeakyRelu, Concat, AveragePool, Mul), and its quantization.
- `branches.dynamic.onnx`: the same graph through `quantize_dynamic` (MatMulInteger,
  DynamicQuantizeLinear).

Made with onnx 1.23.2 and onnxruntime 1.31.1 (`pip install onnx==1.23.2
onnxruntime==1.31.1 numpy`), from this folder: `python3 make_qoperator.py`. The outputs are
checked in, so tests need neither package.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

HERE = os.path.dirname(os.path.abspath(__file__))


class RandomInputs(CalibrationDataReader):
    def __init__(self, name, shape, count, seed):
        rng = np.random.default_rng(seed)
        self.batches = iter(
            [{name: rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self):
        return next(self.batches, None)


def branches():
    """input [1,4,8,8] -> Conv 3x3 -> AveragePool 2x2 -> (Sigmoid | LeakyRelu) -> Concat
    -> Mul by itself -> Flatten -> MatMul [512, 10]."""
    rng = np.random.default_rng(3)
    conv_w = numpy_helper.from_array(
        (rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32), "conv_w"
    )
    conv_b = numpy_helper.from_array(
        (rng.standard_normal(8) * 0.1).astype(np.float32), "conv_b"
    )
    fc_w = numpy_helper.from_array(
        (rng.standard_normal((256, 10)) * 0.1).astype(np.float32), "fc_w"
    )
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Sigmoid", ["p"], ["s"], name="sigmoid"),
        helper.make_node("LeakyRelu", ["p"], ["l"], name="leaky", alpha=0.1),
        helper.make_node("Concat", ["s", "l"], ["cat"], name="concat", axis=1),
        helper.make_node("Mul", ["cat", "cat"], ["sq"], name="square"),
        helper.make_node("Flatten", ["sq"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "branches",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [conv_w, conv_b, fc_w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    cnn = os.path.join(HERE, "pytorch-cnn.onnx")
    for suffix, activation in (("int8", QuantType.QInt8), ("uint8", QuantType.QUInt8)):
        quantize_static(
            cnn,
            os.path.join(HERE, f"pytorch-cnn.qop-{suffix}.onnx"),
            RandomInputs("input", (1, 3, 32, 32), 32, seed=11),
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    float_path = os.path.join(HERE, "branches.onnx")
    onnx.save(branches(), float_path)
    quantize_static(
        float_path,
        os.path.join(HERE, "branches.qop-uint8.onnx"),
        RandomInputs("input", (1, 4, 8, 8), 32, seed=12),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    quantize_dynamic(float_path, os.path.join(HERE, "branches.dynamic.onnx"))
    for name in ("pytorch-cnn.qop-uint8.onnx", "branches.qop-uint8.onnx", "branches.dynamic.onnx"):
        m = onnx.load(os.path.join(HERE, name))
        print(name, sorted({(n.domain or "") + "::" + n.op_type for n in m.graph.node}))


if __name__ == "__main__":
    main()

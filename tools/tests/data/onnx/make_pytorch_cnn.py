"""Writes the PyTorch-exported test CNN and its ONNX Runtime quantized variants.

The import tests use these files as a user's model would arrive: exported by
`torch.onnx.export` (TorchScript exporter, opset 13, dynamic batch) and quantized by
`onnxruntime.quantization.quantize_static` (QDQ, per-channel weights). The weights are
seeded and untrained; BatchNorm statistics are randomised so folding them is not a no-op.

Made with torch 2.5.1, onnx 1.17.0, onnxruntime 1.20.1:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.5.1 onnx==1.17.0 onnxruntime==1.20.1 numpy
    /tmp/torchenv/bin/python make_pytorch_cnn.py

The outputs are checked in, so tests need neither torch nor the quantizer.
"""

import os

import numpy as np
import torch
from torch import nn
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

HERE = os.path.dirname(os.path.abspath(__file__))


class SmallCnn(nn.Module):
    """Conv + BN + ReLU6, depthwise-separable block, max and global pooling, Gemm, softmax."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
        )
        self.pointwise = nn.Sequential(
            nn.Conv2d(16, 32, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.pool = nn.MaxPool2d(2)
        self.post_pool_norm = nn.BatchNorm2d(32)
        self.head_conv = nn.Conv2d(32, 32, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(32, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.depthwise(x)
        x = self.pointwise(x)
        x = self.post_pool_norm(self.pool(x))
        x = torch.relu(self.head_conv(x)) + x
        x = self.gap(x)
        # The classic flatten, which the exporter writes as a Shape/Gather/Concat/Reshape chain.
        x = x.view(x.size(0), -1)
        x = torch.relu(self.fc1(x))
        return torch.softmax(self.fc2(x), dim=1)


def randomise_batch_norm(model, generator):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)


class RandomImages(CalibrationDataReader):
    def __init__(self, count, seed):
        rng = np.random.default_rng(seed)
        self.batches = iter(
            [{"input": rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self):
        return next(self.batches, None)


def main():
    torch.manual_seed(7)
    generator = torch.Generator().manual_seed(7)
    model = SmallCnn()
    randomise_batch_norm(model, generator)
    model.eval()
    float_path = os.path.join(HERE, "pytorch-cnn.onnx")
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 32, 32),
        float_path,
        input_names=["input"],
        output_names=["probabilities"],
        dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=13,
        dynamo=False,
    )
    for suffix, activation in (("int8", QuantType.QInt8), ("uint8", QuantType.QUInt8)):
        quantize_static(
            float_path,
            os.path.join(HERE, f"pytorch-cnn.qdq-{suffix}.onnx"),
            RandomImages(32, seed=11),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


if __name__ == "__main__":
    main()

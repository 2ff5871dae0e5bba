"""Training throughput of a loam graph rebuilt in PyTorch on a chosen device, for
`loam bench-train --device cuda --vs-pytorch PYTHON` (and networks with residual adds).

loam runs it as `PYTHON -c <this file> ARGS` with the graph as JSON on stdin: layers in order,
each naming the earlier layers it reads (0 is the input), with exact padding, strides and
groups. Trains with cross-entropy and Adam on seeded random data at the given batch size and
prints one JSON line: {"samples_per_s": ..., "torch": ..., "device": ...}. Needs `torch` (built
with CUDA for --device cuda).
"""
import argparse
import json
import sys
import time

import torch
from torch import nn


class Graph(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.layers = spec["layers"]
        mods = []
        for layer in self.layers:
            kind = layer["kind"]
            if kind in ("conv", "depthwise"):
                top, left, bottom, right = layer["padding"]
                conv = nn.Conv2d(
                    layer["in_channels"],
                    layer["out_channels"],
                    tuple(layer["kernel"]),
                    stride=tuple(layer["stride"]),
                    dilation=tuple(layer["dilation"]),
                    groups=layer["groups"],
                )
                if any(layer["padding"]):
                    conv = nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv)
                mods.append(conv)
            elif kind == "dense":
                mods.append(nn.Linear(layer["in_features"], layer["out_features"]))
            elif kind == "max_pool":
                mods.append(nn.MaxPool2d(tuple(layer["kernel"]), tuple(layer["stride"])))
            elif kind == "avg_pool":
                mods.append(nn.AvgPool2d(tuple(layer["kernel"]), tuple(layer["stride"])))
            elif kind == "global_avg_pool":
                mods.append(nn.AdaptiveAvgPool2d(1))
            elif kind == "flatten":
                # loam flattens NHWC; the order differs from NCHW but not the work.
                mods.append(nn.Flatten())
            elif kind == "dropout":
                mods.append(nn.Dropout(layer["rate"]))
            elif kind in ("add", "softmax"):
                # Add is computed in forward; softmax is folded into the loss, as loam does.
                mods.append(nn.Identity())
            else:
                sys.exit(f"unsupported layer {kind}")
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        outs = [x]
        for layer, mod in zip(self.layers, self.mods):
            inputs = [outs[i] for i in layer["inputs"]]
            y = inputs[0] + inputs[1] if layer["kind"] == "add" else mod(inputs[0])
            act = layer.get("activation")
            if act == "relu":
                y = torch.relu(y)
            elif act == "relu6":
                y = torch.nn.functional.relu6(y)
            outs.append(y)
        return outs[-1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit(f"torch {torch.__version__} sees no CUDA GPU")
        # f32 arithmetic, as loam's default: no TF32 in convolutions or matrix products; the
        # fastest cuDNN algorithms for these shapes.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    spec = json.load(sys.stdin)
    model = Graph(spec).to(device)
    dims = spec["input"]  # [h, w, c] or [n]
    shape = [dims[2], dims[0], dims[1]] if len(dims) == 3 else dims
    x = torch.rand([args.samples] + shape, device=device)
    y = torch.randint(0, args.classes, (args.samples,), device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def epoch():
        order = torch.randperm(args.samples, device=device)
        for i in range(0, args.samples, args.batch):
            idx = order[i : i + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    epoch()  # warm-up (and cuDNN's algorithm search)
    start = time.perf_counter()
    epoch()
    seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        json.dumps(
            {"samples_per_s": args.samples / seconds, "torch": torch.__version__, "device": name}
        )
    )


if __name__ == "__main__":
    main()

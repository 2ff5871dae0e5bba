#!/usr/bin/env python3
"""Training throughput of a loam graph rebuilt in PyTorch, for `loam bench-train --vs pytorch`.

Reads the network as JSON (written by loam: a chain of layers with exact padding, strides and
groups) on stdin, trains it with cross-entropy and Adam on seeded random data at the given batch
size and thread count, and prints one JSON line: {"samples_per_s": ...}. Needs `torch`.
"""
import argparse
import json
import sys
import time

import torch
from torch import nn


def build(spec):
    layers = []
    dims = spec["input"]  # [h, w, c] or [n]
    for layer in spec["layers"]:
        kind = layer["kind"]
        if kind in ("conv", "depthwise"):
            top, left, bottom, right = layer["padding"]
            if any(layer["padding"]):
                layers.append(nn.ZeroPad2d((left, right, top, bottom)))
            layers.append(
                nn.Conv2d(
                    layer["in_channels"],
                    layer["out_channels"],
                    tuple(layer["kernel"]),
                    stride=tuple(layer["stride"]),
                    dilation=tuple(layer["dilation"]),
                    groups=layer["groups"],
                )
            )
        elif kind == "dense":
            layers.append(nn.Linear(layer["in_features"], layer["out_features"]))
        elif kind == "max_pool":
            layers.append(nn.MaxPool2d(tuple(layer["kernel"]), tuple(layer["stride"])))
        elif kind == "avg_pool":
            layers.append(nn.AvgPool2d(tuple(layer["kernel"]), tuple(layer["stride"])))
        elif kind == "global_avg_pool":
            layers.append(nn.AdaptiveAvgPool2d(1))
        elif kind == "flatten":
            # loam flattens NHWC; the order differs from NCHW but not the work.
            layers.append(nn.Flatten())
        elif kind == "dropout":
            layers.append(nn.Dropout(layer["rate"]))
        elif kind == "softmax":
            continue  # folded into the loss, as loam does
        else:
            sys.exit(f"unsupported layer {kind}")
        act = layer.get("activation")
        if act == "relu":
            layers.append(nn.ReLU())
        elif act == "relu6":
            layers.append(nn.ReLU6())
    return nn.Sequential(*layers), dims


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--classes", type=int, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = json.load(sys.stdin)
    model, dims = build(spec)
    shape = [dims[2], dims[0], dims[1]] if len(dims) == 3 else dims
    x = torch.rand([args.samples] + shape)
    y = torch.randint(0, args.classes, (args.samples,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def epoch():
        order = torch.randperm(args.samples)
        for i in range(0, args.samples, args.batch):
            idx = order[i : i + args.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()

    model.train()
    epoch()  # warm-up
    start = time.perf_counter()
    epoch()
    seconds = time.perf_counter() - start
    print(json.dumps({"samples_per_s": args.samples / seconds, "torch": torch.__version__}))


if __name__ == "__main__":
    main()

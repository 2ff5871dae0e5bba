"""Lays out the ONNX backend test cases for loam's conformance test (tests/tests/onnx_conformance.rs).

    python3 tests/conformance/prepare.py SOURCE OUTPUT

SOURCE is an `onnx/backend/test/data` folder (the installed wheel's, usually). OUTPUT gets
OUTPUT/<suite>/<case>/model.onnx with the case's test_data_set_N folders (linked, not copied)
for the suites pytorch-converted, pytorch-operator, simple and node, where:

- `node`, which recent wheels no longer ship, is written from the wheel's own case code
  (`onnx.backend.test.case.node`), as `python -m onnx.backend.test.cmd_tools generate-data`
  writes the model suites;
- a model whose default opset is outside the range loam imports (11 to 22) is converted with
  `onnx.version_converter` (to 17 from older opsets, to 22 from newer ones), which is what
  loam's own error message tells a user to do; the case folder then holds `converted_from`
  with the original opset. A model the converter cannot convert is kept as it is, and the
  importer refuses it with its opset message.
"""

from __future__ import annotations

import os
import sys
import warnings

import onnx
import onnx.backend.test.case.node as node_cases
from onnx import TensorProto, numpy_helper, version_converter

SUITES = ("pytorch-converted", "pytorch-operator", "simple", "node")

# loam's importer takes default-domain opsets 11..=22 (tools/src/onnx/import/mod.rs OPSETS).
OLDEST, NEWEST = 11, 22
# What older models are converted to: the opset loam's error message recommends.
UPGRADE_TO = 17


def serialize(value, value_info) -> bytes:
    """A test value as the TensorProto (or sequence/optional/map proto) ONNX's runner reads."""
    kind = value_info.type
    if kind.HasField("map_type"):
        return numpy_helper.from_dict(value, value_info.name).SerializeToString()
    if kind.HasField("sequence_type"):
        return numpy_helper.from_list(value, value_info.name).SerializeToString()
    if kind.HasField("optional_type"):
        return numpy_helper.from_optional(value, value_info.name).SerializeToString()
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, value_info.name).SerializeToString()


def write_node_suite(out: str) -> None:
    """The `node` cases, model and data, as the wheel's generator would write them."""
    for case in node_cases.collect_testcases(None):
        case_dir = os.path.join(out, case.name)
        os.makedirs(case_dir, exist_ok=True)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets or []):
            set_dir = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(set_dir, exist_ok=True)
            # The K-th file is the K-th value given, for the graph's K-th input or output.
            for prefix, values, infos in (
                ("input", inputs, graph.input),
                ("output", outputs, graph.output),
            ):
                for j, value in enumerate(values):
                    with open(os.path.join(set_dir, f"{prefix}_{j}.pb"), "wb") as f:
                        f.write(serialize(value, infos[j]))


def link_suite(source: str, out: str) -> None:
    """A wheel suite: model files copied (they may be converted in place), data linked."""
    for name in sorted(os.listdir(source)):
        case = os.path.join(source, name)
        if not os.path.isfile(os.path.join(case, "model.onnx")):
            continue
        case_out = os.path.join(out, name)
        os.makedirs(case_out, exist_ok=True)
        with open(os.path.join(case, "model.onnx"), "rb") as f:
            model = f.read()
        with open(os.path.join(case_out, "model.onnx"), "wb") as f:
            f.write(model)
        for entry in os.listdir(case):
            if entry.startswith("test_data_set_"):
                os.symlink(os.path.join(case, entry), os.path.join(case_out, entry))


def convert_opsets(out: str) -> None:
    """Converts every model under `out` whose default opset loam does not import."""
    for suite in os.listdir(out):
        for name in os.listdir(os.path.join(out, suite)):
            path = os.path.join(out, suite, name, "model.onnx")
            model = onnx.load(path)
            versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
            if not versions or OLDEST <= versions[0] <= NEWEST:
                continue
            target = UPGRADE_TO if versions[0] < OLDEST else NEWEST
            try:
                converted = version_converter.convert_version(model, target)
            except Exception:  # noqa: BLE001 - the converter raises bare RuntimeErrors
                continue
            onnx.save(converted, path)
            with open(os.path.join(out, suite, name, "converted_from"), "w") as f:
                f.write(f"{versions[0]}\n")


def main() -> None:
    source, out = sys.argv[1], sys.argv[2]
    # The node case code divides by zero on purpose (expected infinities) and says so.
    warnings.simplefilter("ignore")
    for suite in SUITES:
        suite_source = os.path.join(source, suite)
        if os.path.isdir(suite_source):
            link_suite(suite_source, os.path.join(out, suite))
        elif suite == "node":
            write_node_suite(os.path.join(out, suite))
    convert_opsets(out)


if __name__ == "__main__":
    main()

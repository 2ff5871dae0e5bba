#!/usr/bin/env bash
# Regenerates data/digits.csv.gz and data/LICENSE-scikit-learn.txt: the 8x8 hand-written
# digits set (1797 rows, 64 pixel columns in 0..=16, then the label), copied byte for byte
# out of a pinned scikit-learn wheel. Needs python3 with pip, and network access to PyPI.
#
# The wheel is pinned to one platform so the download is the same file everywhere; the data
# file inside is the same in every wheel of this version, and its sha256 is checked too.
set -euo pipefail

SKLEARN_VERSION=1.9.1
WHEEL=scikit_learn-${SKLEARN_VERSION}-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
WHEEL_SHA256=e5d7b18a5b9dca241a74695f3275fa4c895a9dadc72b3d8df5fa9d1083c9b83e
DIGITS_SHA256=09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/data"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m pip download "scikit-learn==${SKLEARN_VERSION}" --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --python-version 3.12 --implementation cp -d "$work" >&2
echo "${WHEEL_SHA256}  $work/$WHEEL" | sha256sum -c - >&2

# python's zipfile instead of `unzip`, which is not installed everywhere pip is.
python3 - "$work/$WHEEL" "$work" "$SKLEARN_VERSION" <<'PY'
import sys, zipfile
wheel, work, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    with open(f"{work}/digits.csv.gz", "wb") as f:
        f.write(z.read("sklearn/datasets/data/digits.csv.gz"))
    copying = z.read(f"scikit_learn-{version}.dist-info/licenses/COPYING").decode()
# The wheel's COPYING goes on to list the GCC runtime it bundles; only the BSD-3 part
# covers the data file.
bsd = copying.split("\n----\n", 1)[0].rstrip() + "\n"
with open(f"{work}/LICENSE-scikit-learn.txt", "w") as f:
    f.write(bsd)
    f.write(
        "\n----\n\n"
        "digits.csv.gz is sklearn/datasets/data/digits.csv.gz from the scikit-learn "
        f"{version} wheel.\n"
        "Origin: the UCI ML hand-written digits data set (Optical Recognition of Handwritten\n"
        "Digits, E. Alpaydin and C. Kaynak, 1998, UCI Machine Learning Repository,\n"
        "https://archive.ics.uci.edu/dataset/80), via scikit-learn.\n"
    )
PY
echo "${DIGITS_SHA256}  $work/digits.csv.gz" | sha256sum -c - >&2

mkdir -p "$out"
mv "$work/digits.csv.gz" "$work/LICENSE-scikit-learn.txt" "$out/"
echo "wrote $out/digits.csv.gz and $out/LICENSE-scikit-learn.txt" >&2

#!/usr/bin/env bash
# Developer tool (never run by tests or CI): download, here where pip reaches PyPI, the wheels the
# GPU image lacks, for CPython 3.12 manylinux x86_64, into benchmarks/gpu/wheels/ (git-ignored).
# Carry that folder to the GPU machine (device tool: carry=["benchmarks/gpu/wheels"], 64 MiB in
# all with the working tree); check.sh installs them with --no-index --no-deps.
# Versions follow this environment's installs where it has them, so both sides agree.
set -euo pipefail
cd "$(dirname "$0")"
dest=wheels
mkdir -p "$dest"
PY=${PYTHON:-python3}
# Missing on the GPU image (see /work/.library/device/KINDS.md), with their own missing needs.
names=(openslide-bin openslide-python zarr numcodecs donfig crc32c lifelines autograd
       autograd-gamma dask distributed partd locket tblib zict tornado anndata
       array-api-compat natsort legacy-api-wrap)
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform any)
for n in "${names[@]}"; do
  v=$("$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: print('')" "$n")
  spec=$n${v:+==$v}
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d "$dest" "$spec" \
    || "$PY" -m pip wheel -q --no-deps -w "$dest" "$spec" \
    || echo "prepare_wheels.sh: could not fetch $spec" >&2  # pip wheel: sdist-only (pure Python)
done
du -sh "$dest"
total=$(du -sm "$dest" | cut -f1)
if (( total > 48 )); then
  echo "prepare_wheels.sh: $total MiB of wheels; the carry limit is 64 MiB with the tree" >&2
fi

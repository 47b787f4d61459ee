#!/usr/bin/env bash
# The GPU check of issue #17, one command: build the extension, run the GPU tests, measure.
#
#   benchmarks/gpu/check.sh [--out FILE] [check.py options]   on a GPU machine (<= 8 min, H100/H200)
#   benchmarks/gpu/check.sh --dry-run [--out FILE]            CPU rehearsal: no build, no GPU tests
#
# Packages the GPU image lacks (openslide-bin/-python, zarr, lifelines, dask ...) are installed
# from benchmarks/gpu/wheels/ (made here by prepare_wheels.sh; git-ignored, carried explicitly).
# The measurements are benchmarks/gpu/check.py; its table goes to stdout and to --out.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
dry=0
for a in "$@"; do [[ $a == --dry-run ]] && dry=1; done
tests_rc=0
if [[ $dry == 0 ]]; then
  t0=$SECONDS
  wheels=benchmarks/gpu/wheels
  if compgen -G "$wheels/*.whl" >/dev/null; then
    site=${VIRTIME_CHECK_SITE:-/tmp/virtime-check-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "check.sh: no wheels in $wheels (run benchmarks/gpu/prepare_wheels.sh where pip works)" >&2
  fi
  echo "== build"
  "$PY" -m pip install -q --no-build-isolation --no-deps -Cbuild-dir=build/gpu-check .
  echo "== pytest -m gpu ($((SECONDS - t0)) s so far)"
  # --import-mode=importlib (pyproject): the installed extension is the one imported.
  "$PY" -m pytest -m gpu -q -p no:cacheprovider tests || tests_rc=$?
  echo "== measurements ($((SECONDS - t0)) s so far)"
fi
rc=0
PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu/check.py "$@" || rc=$?
if [[ $tests_rc != 0 ]]; then
  echo "check.sh: pytest -m gpu failed (exit $tests_rc)" >&2
  exit "$tests_rc"
fi
exit "$rc"

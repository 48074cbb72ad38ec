#!/usr/bin/env bash
# The one script a lent GPU machine runs: install the project, run the CUDA tests, then the side-by-side
# throughput table (benchmarks/gpu_throughput.py) for ViT-B-32 (with the compiled modes) and RN50 at
# batch 256 in bf16. Sized to take about six minutes on one H100/H200-class GPU, so that it fits twice
# in fifteen. Results go to $OUT (default gpu_check/).
#
#   bash benchmarks/gpu_check.sh
#   DEVICE=cpu MODELS=cyclip-rn-tiny BATCH=16 PRECISION=fp32 WORKERS=2 WARMUP=2 STEPS=4 LOG_EVERY=1 \
#       INSTALL=0 bash benchmarks/gpu_check.sh    # the same path, tried on a CPU in a ready environment
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-ViT-B-32 RN50}
BATCH=${BATCH:-256}
PRECISION=${PRECISION:-bf16}
WORKERS=${WORKERS:-12}
WARMUP=${WARMUP:-10}
STEPS=${STEPS:-20}
LOG_EVERY=${LOG_EVERY:-5}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}  # H100/H200 SXM, dense bf16
mkdir -p "$OUT"
start=$SECONDS

# Install into the Python that already has torch (offline: no dependency downloads), else the project's
# own .venv from the Makefile.
PYTHON=${PYTHON:-python3}
if [ "${INSTALL:-1}" = 0 ]; then
    echo "INSTALL=0: using $PYTHON as it is"
elif "$PYTHON" -c "import torch, open_clip, open_clip_train, webdataset, pandas" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . || echo "install skipped; using PYTHONPATH=src"
else
    make setup && .venv/bin/python -m pip install --quiet -e '.[dev,bench]'
    PYTHON=.venv/bin/python
fi
export PYTHONPATH=src
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/device.txt"

"$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$OUT/cuda_tests.txt"
echo "tests done after $((SECONDS - start)) s"

first=1
for model in $MODELS; do
    compile=()
    [ "$first" = 1 ] || compile=(--no-compile)  # the compiled comparison once, on the first model
    first=0
    "$PYTHON" benchmarks/gpu_throughput.py --device "$DEVICE" --models "$model" --batch-size "$BATCH" \
        --precision "$PRECISION" --workers "$WORKERS" --warmup-steps "$WARMUP" --steps "$STEPS" \
        --log-every "$LOG_EVERY" --peak-tflops "$PEAK_TFLOPS" "${compile[@]}" | tee "$OUT/throughput_$model.md"
    echo "$model done after $((SECONDS - start)) s"
done

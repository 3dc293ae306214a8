#!/usr/bin/env bash
# The prepared GPU check (issue 14): throughput, MFU, kNN / k-means and learning at scale in one
# command that fits a 15-minute device lease (the machine's start, one run, one rerun).
#
#   bash benchmarks/gpu_check.sh OUT_DIR [--fmnist DIR] [--budget SECONDS]   # one CUDA GPU
#   bash benchmarks/gpu_check.sh --smoke OUT_DIR                              # CPU, seconds (CI)
#
# Needs Python with torch, torchvision, pytorch-lightning and timm; runs from the tree (PYTHONPATH is
# set to the repository root, nothing is pip-installed), without faiss or wandb (k-means runs the
# torch backend). PYTHON picks the interpreter (default: python, else python3). Writes OUT_DIR/
# {environment,throughput,kernels,learning,nonfinite}.json, one <part>.log each, log.txt and
# summary.md, and prints the summary. Exit code 0: every part ok; 1: a part failed (its JSON says
# why, the other parts ran); 2: a usage error, or Python could not run at all.
#
# Expected wall time of the full run on one H100/H200 (default --budget 450 s; 8 minutes promised).
# A CPU extrapolation, not a GPU measurement: FLOPs per step counted on the CPU with
# torch.utils.flop_counter (SimCLR R18 32 px b512: 3.42 TFLOP; MoCo v2 2.30; SwAV 2x32+6x14 px
# 5.70; SimCLR R18 28 px: 2.81), GPU time assumed at 15 % (eager) of the 989 TFLOP/s bf16 peak,
# torch.compile of ResNet-18 assumed 60-90 s, the DataLoader pipeline extrapolated from the
# torchvision cost measured on this CPU (443 us per 32 px view) over 8 workers:
#   start, imports, CUDA init, environment.json        ~20 s
#   1 throughput (cap 190 s)  ~110 s  SimCLR eager ~8 s (suite ~23 ms/step, DataLoader ~56 ms/step),
#                                     compiled ~75-100 s, MoCo v2 ~8 s, SwAV multi-crop ~10 s; a
#                                     sub-run starts only if its estimate is left of the part's cap
#   2 kernels    (cap  60 s)   ~10 s  kNN ~0.1 s, k-means ~0.3 s, the rest is making 50k x 4096 data
#   3 learning                ~245 s  data ~5 s, 2 calibration epochs ~3 s, pre-training min(240 s,
#                                     what the deadline leaves: ~220 s) at ~0.6 s/epoch (~350 epochs
#                                     of the 14,886 LT images), offline probe + kNN ~15 s; the balanced
#                                     twin needs --budget ~750 (it repeats the same epochs)
#   4 nonfinite  (cap  80 s)   ~15 s  2 x (raise, ignore) Lightning fits of 10 + 30 steps
#   total                     ~400 s
# --smoke on 2 idle CPU cores: ~35 s wall, ~22 s CPU (mostly importing torch and Lightning); its caps
# (600 s a part) only catch hangs.
# The caps shrink so that the run ends within --budget of this script's start. A part that dies or
# hits its cap is marked failed in its JSON (what it finished is kept) and this script restarts
# Python for the parts after it.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif command -v python >/dev/null 2>&1; then PY=python
else PY=python3
fi

usage() { sed -n '5,6p' "${BASH_SOURCE[0]}" | sed 's/^# *//'; }
OUT="" ; ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) ARGS+=(--smoke) ;;
    --fmnist|--budget)
      [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; usage >&2; exit 2; }
      ARGS+=("$1" "$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$OUT" ] || { echo "gpu_check.sh: one OUT_DIR expected, got '$OUT' and '$1'" >&2; exit 2; }
       OUT="$1" ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "gpu_check.sh: OUT_DIR missing" >&2; usage >&2; exit 2; }
mkdir -p "$OUT" || exit 2
STARTED="$(date +%s)"
LOG="$OUT/log.txt"
: > "$LOG"
EXTRA=(--fresh)
rc=2
for attempt in 1 2 3 4 5; do
  "$PY" -u "$ROOT/benchmarks/gpu_check.py" "$OUT" "${ARGS[@]}" --started-at "$STARTED" "${EXTRA[@]}" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) exit 0 ;;
    10) exit 1 ;;
    2) exit 2 ;;  # a usage error (argparse, GPU_CHECK_FAIL): restarting would not help
  esac
  if ! grep -qs '"status": "running"' "$OUT"/*.json; then  # it died outside a part: a restart would too
    echo "gpu_check.sh: Python exited with code $rc before or between parts; see $LOG" | tee -a "$LOG" >&2
    exit 2
  fi
  echo "gpu_check.sh: Python exited with code $rc (attempt $attempt); restarting it for the remaining parts" | tee -a "$LOG"
  EXTRA=(--after-crash "$rc")
done
echo "gpu_check.sh: gave up after 5 attempts (last exit code $rc); see $LOG" >&2
exit 2

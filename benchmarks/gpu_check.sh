#!/usr/bin/env bash
# The GPU check: every device test (make test-gpu), then benchmarks/gpu.py, into one folder.
#
#   bash benchmarks/gpu_check.sh                  # CUDA; fits in --minutes (8) on one H100-class GPU
#   bash benchmarks/gpu_check.sh --device cpu     # the same logic on a CPU, small sizes
#   bash benchmarks/gpu_check.sh --out DIR --minutes 8 -- -x -k training   # after --: pytest's
#
# Writes DIR (default gpu-check-YYYYmmdd-HHMMSS/): env.txt (torch, nvidia-smi), tests.log and
# tests.xml (pytest -m gpu), gpu.jsonl (one JSON line per measurement), bench.log, tables.md and
# summary.txt, which it also prints. Exit status 0 when every test passed and the benchmarks ran,
# 1 otherwise, 2 on bad usage or when --device cuda finds no CUDA device. Python: $CK_PYTHON,
# else the repository's .venv (make gpu-check builds it first), else python3.
set -uo pipefail

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

device=cuda out="" minutes=8 pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=${2:?--device needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --minutes) minutes=${2:?--minutes needs a value}; shift 2 ;;
    --) shift; pytest_args=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$device" in
  cpu | cuda) ;;  # one GPU: choose it with CUDA_VISIBLE_DEVICES
  *) echo "error: --device must be cpu or cuda, got '$device'" >&2; exit 2 ;;
esac
case "$minutes" in
  '' | *[!0-9]*) echo "error: --minutes must be a whole number, got '$minutes'" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${CK_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
out=${out:-gpu-check-$(date +%Y%m%d-%H%M%S)}
if [ -e "$out/gpu.jsonl" ]; then
  echo "error: $out already holds a check (gpu.jsonl); choose another --out" >&2
  exit 2
fi
mkdir -p "$out" && out=$(cd "$out" && pwd)
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}  # deterministic cuBLAS
start=$SECONDS

# 0. what runs where; stop here if CUDA is asked for and there is none
"$py" -c 'import sys, torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuda available {torch.cuda.is_available()}, {torch.cuda.device_count()} device(s)")
sys.exit(sys.argv[1] != "cpu" and not torch.cuda.is_available())' "$device" > "$out/env.txt" 2>&1
cuda_rc=$?
if command -v nvidia-smi > /dev/null; then
  nvidia-smi >> "$out/env.txt" 2>&1
else
  echo "(no nvidia-smi on PATH)" >> "$out/env.txt"
fi
if [ "$cuda_rc" -ne 0 ]; then
  echo "error: --device cuda, but torch sees no CUDA device ($out/env.txt); --device cpu checks the logic" >&2
  exit 2
fi

# 1. the device tests (what `make test-gpu` runs), CUDA cases included when there is a GPU
if [ "$device" = cpu ]; then workers=0; else workers=$(( $(nproc) < 4 ? $(nproc) : 4 )); fi
(cd "$root" && "$py" -m pytest -m gpu -q -n "$workers" --junitxml="$out/tests.xml" \
  ${pytest_args[@]+"${pytest_args[@]}"}) 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}
tests_s=$((SECONDS - start))

# 2. the benchmarks, in the time left (55 % losses, 45 % training steps)
left=$((minutes * 60 - tests_s - 20))
[ "$left" -ge 60 ] || left=60
if [ "$device" = cpu ]; then
  sizes=(--views 64,128 --tile-sizes 32 --rounds 2 --models small_cnn --sizes 32
    --precisions fp32,fp16 --batch 8 --steps 2)  # fp16: the CPU refuses it, recorded as skipped
else
  sizes=()
fi
"$py" "$root/benchmarks/gpu.py" --device "$device" --out "$out/gpu.jsonl" \
  --loss-budget $((left * 55 / 100)) --step-budget $((left * 45 / 100)) ${sizes[@]+"${sizes[@]}"} \
  2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}
"$py" "$root/benchmarks/gpu.py" --table "$out/gpu.jsonl" > "$out/tables.md" 2>&1
bench_s=$((SECONDS - start - tests_s))

# 3. the summary
if [ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]; then result=PASS; else result=FAIL; fi
{
  echo
  echo "== contrastkit GPU check ($device) =="
  "$py" "$root/benchmarks/gpu.py" --summary "$out"
  echo "time: tests ${tests_s} s, benchmarks ${bench_s} s, total $((SECONDS - start)) s"
  echo "result: $result (pytest exit $tests_rc, benchmarks exit $bench_rc)"
} 2>&1 | tee "$out/summary.txt"
[ "$result" = PASS ]

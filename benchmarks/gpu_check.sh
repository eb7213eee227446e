#!/usr/bin/env bash
# Issue 11's GPU check, in under 8 minutes on one H100 (not run on a GPU yet).
#
#   VAE_DATA_CACHE=cache bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Needs only JAX (CUDA), flax, optax, chex, absl, orbax, numpyro (and scipy,
# numpy): no TensorFlow, no network. The data come from the numpy cache
# $VAE_DATA_CACHE/binarized_mnist.npz (write it on a machine with TFDS:
#   VAE_TFDS_DATA_DIR=... python -c "from vae import data;
#   data.load_dataset('binarized_mnist', cache_dir='cache')"
# and carry cache/ along). Prints the device and versions, checks that
# loading the data imports no tensorflow, then runs
#   1. the three benchmarks at full size (each under a time limit);
#   2. Burda et al.'s schedule (3,280 passes, lr 1e-3·10^(-i/7)) for the
#      1-layer VAE (k = 1) and the IWAE (k = 50), each for half of the time
#      left, then the test NLL at K = 5000 (benchmarks/burda_training.py:
#      passes done, examples/s, full_schedule_s = the whole schedule's time
#      at that speed).
# Results: OUT_DIR/*.json and OUT_DIR/log.txt (OUT_DIR: $OUT, else
# gpu_check_out). Settings (environment):
#   GPU_CHECK_BUDGET_S  wall seconds for the whole script (default 450)
#   GPU_CHECK_TINY=1    tiny sizes, to test the script on a CPU in ~3 min
#   PYTHON              the interpreter (default: python3)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
budget="${GPU_CHECK_BUDGET_S:-450}"
tiny="${GPU_CHECK_TINY:-0}"
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
log() { echo "# gpu_check $(date -u +%H:%M:%S) [$(($(date +%s) - start)) s]" \
  "$*" | tee -a "$out/log.txt"; }
run() {  # run LIMIT_S NAME COMMAND...: output to the screen and the log.
  local limit=$1 name=$2
  shift 2
  log "$name (limit ${limit} s)"
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 |
    tee -a "$out/log.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || log "$name: exit status $rc (124: stopped at the limit)"
}

log "output in $out; budget ${budget} s; tiny=$tiny"
command -v nvidia-smi > /dev/null && nvidia-smi -L | tee -a "$out/log.txt"
"$py" - <<'EOF' 2>&1 | tee -a "$out/log.txt"
import importlib.metadata as md, sys
import jax
print('devices:', jax.devices(), 'backend:', jax.default_backend())
names = ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'orbax-checkpoint',
         'numpyro', 'numpy', 'scipy', 'matplotlib')
def version(n):
  try:
    return md.version(n)
  except md.PackageNotFoundError:
    return '-'
print('python', sys.version.split()[0], ' '.join(f'{n}={version(n)}'
                                               for n in names))
EOF
# The data, from the cache, without tensorflow (-X importtime lists every
# module imported; none may be tensorflow or tensorflow_datasets, or one of
# their submodules).
"$py" -X importtime -c "
import sys
from vae import data
ds = data.load_dataset('binarized_mnist')
print('data:', ds.train.shape, ds.test.shape, 'tensorflow imported:',
      'tensorflow' in sys.modules)
" 2> "$out/importtime.txt" | tee -a "$out/log.txt"
if awk -F'|' '{gsub(/ /, "", $3); print $3}' "$out/importtime.txt" |
    grep -q -E '^tensorflow(_datasets)?(\.|$)'; then
  log "FAILED: loading the data imported tensorflow (see importtime.txt)"
else
  log "loading the data imported no tensorflow" \
    "($(wc -l < "$out/importtime.txt") modules)"
fi

if [ "$tiny" = 1 ]; then
  small=(--peak_n=256 --repeats=1)
  train_args=(--num_train=500 "${small[@]}")
  moments_args=(--num_draws=8 --chunk=4 "${small[@]}")
  is_args=(--num_images=20 --num_samples=100 --batch=10 --chunk=50
           --plain_batch=10 --eval_batch=10 --eval_chunk=50 "${small[@]}")
  schedule_args=(--num_train=1000 --num_eval=50 --eval_k=100 --eval_chunk=50)
  limits=(90 90 90)
else
  train_args=(--full)
  moments_args=(--full --chunk=1000)
  is_args=(--full --batch=100 --chunk=500 --plain_batch=20 --eval_batch=100
           --eval_chunk=1000)
  schedule_args=()
  limits=(60 45 50)
fi
run "${limits[0]}" train_throughput "$py" -m benchmarks.train_throughput \
  "${train_args[@]}" --output="$out/train_throughput.json"
run "${limits[1]}" moments "$py" -m benchmarks.moments "${moments_args[@]}" \
  --output="$out/moments.json"
run "${limits[2]}" importance_sampling "$py" -m benchmarks.importance_sampling \
  "${is_args[@]}" --output="$out/importance_sampling.json"

# The two models share what is left: each gets half, of which ~60 s go to
# start-up, the evaluation's compilation and K = 5000 importance sampling
# of the test set, the rest to training (compilation included).
for k in 1 50; do
  each=$(($(left) / (k == 1 ? 2 : 1) - 10))
  train_s=$((each - 60 > 5 ? each - 60 : 5))
  run $((each > 60 ? each : 60)) "burda_k$k" \
    "$py" -m benchmarks.burda_training --k=$k --budget_s=$train_s \
    "${schedule_args[@]}" --output="$out/burda_k$k.json"
done
log "summary"
grep -h -E "/targets:|^burda_training/" "$out/log.txt" |
  tee -a "$out/summary.txt"
log "done in $(($(date +%s) - start)) s (budget $budget s)"

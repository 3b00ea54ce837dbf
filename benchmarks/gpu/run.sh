#!/usr/bin/env bash
# The real-GPU check of issue 6: a real continuous-batching server on one GPU, the benchmark's
# single/sync/async modes against it on slices of the busy hour (25 and 100 agents, fixed output
# lengths), and the per-iteration latency of the model by batch size (to check the simulator).
#
#   bash benchmarks/gpu/run.sh OUT_DIR [CARRY_DIR]
#
# CARRY_DIR (optional) holds wheels/ (Python packages the GPU image lacks, installed offline into
# a private folder) and traces/ (trace files saved with Trace.save, so that the GPU run and its
# simulated twin replay exactly the same calls). Without traces/, the traces are generated here.
# Budget: about 7 minutes on an H200 (model build 1 min, server start 20 s, benches ~5 min).
set -u
OUT=${1:-out/gpu}
CARRY=${2:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -n "$CARRY" ] && CARRY=$(cd "$CARRY" && pwd)
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# The package as an install lays it out (wrappers/ is metropolis_env.wrappers), without pip.
PKG=$(mktemp -d)
cp -r "$ROOT/metropolis_env" "$PKG/" && cp -r "$ROOT/wrappers" "$PKG/metropolis_env/wrappers"
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$CARRY" ] && [ -d "$CARRY/wheels" ]; then
  SITE=$(mktemp -d)
  $PY -m pip install --no-index --no-deps --target "$SITE" "$CARRY"/wheels/*.whl -q >"$OUT/pip.log" 2>&1
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi
MODEL=${MODEL_DIR:-/tmp/llama3-8b-random}
PORT=${PORT:-18080}
URL="http://127.0.0.1:$PORT/v1"
T0=$(date +%s)
log() { echo "[gpu $(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/run.log"; }

if [ -f "$MODEL/config.json" ] && [ -f "$OUT/profile.json" ]; then
  log "model already built in $MODEL"
else
  log "building the random-weight model and profiling forward passes"
  $PY "$ROOT/benchmarks/gpu/build_model.py" "$MODEL" "$OUT/profile.json" >"$OUT/build.log" 2>&1 || { log "build failed"; tail -20 "$OUT/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1

log "starting transformers serve (continuous batching)"
$PY -m transformers.cli.transformers serve "$MODEL" --continuous-batching --host 127.0.0.1 --port "$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
$PY - "$URL" "$MODEL" "$SERVER" <<'PYEOF' || { log "server did not come up"; tail -30 "$OUT/server.log"; exit 1; }
import json, os, sys, time, urllib.request
url, model, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = json.dumps({"model": model, "prompt": "t1 t2 t3", "max_tokens": 2,
                   "generation_config": json.dumps({"min_new_tokens": 2, "max_new_tokens": 2, "do_sample": False})}).encode()
for _ in range(180):
    try:
        req = urllib.request.Request(url + "/completions", body, {"Content-Type": "application/json"})
        print(urllib.request.urlopen(req, timeout=30).read()[:300]); sys.exit(0)
    except Exception as e:
        try:
            os.kill(pid, 0)  # the server died: stop waiting
        except OSError:
            sys.exit(1)
        time.sleep(1)
sys.exit(1)
PYEOF
log "server up"

bench() {  # name, time limit (s), extra args...
  local name=$1 limit=$2; shift 2
  log "bench $name"
  # from $PKG: `python -m` puts the working directory first on sys.path, and the checkout's own
  # metropolis_env lacks metropolis_env.wrappers (an install maps it from wrappers/)
  (cd "$PKG" && timeout "$limit" $PY -m metropolis_env.cli bench --backend openai --server transformers --base-url "$URL" \
      --api-model "$MODEL" --no-bounds --no-progress --json "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1) \
      || log "bench $name failed or timed out (see $name.log)"
  tail -12 "$OUT/$name.log" | tee -a "$OUT/run.log"
}
trace_args() {  # agents, steps
  if [ -n "$CARRY" ] && [ -f "$CARRY/traces/busy-$1.npz" ]; then
    echo "--trace $CARRY/traces/busy-$1.npz --steps $2"
  else
    echo "--workload genagents-day --window busy --agents $1 --steps $2"
  fi
}
# CASES picks what runs (default: the short slices). The longer slices of issue 15 (25 agents x 60
# busy-hour steps, 100 agents x 20, with and without speculation) take ~35 min of this server in
# all, so each is split into cases that fit one 10-minute device call with the model build and
# server start (README.md, "Longer slices"): one mode per case, and sync in two halves (sync
# times add up over consecutive slices: the server is empty at every barrier). Their traces are
# generated here from the workload; report.py regenerates the same ones.
for case in ${CASES:-busy25 busy100}; do
  case $case in
    busy25) bench busy25 230 $(trace_args 25 ${STEPS25:-10}) --modes single,sync,async ;;
    busy100) bench busy100 150 $(trace_args 100 ${STEPS100:-6}) --modes sync,async ;;
    long25-*|long100-*)
      agents=${case#long}; agents=${agents%%-*}
      steps=$([ "$agents" = 25 ] && echo 60 || echo 20)  # report.py's LONG
      half=$((steps / 2))
      case ${case#long$agents-} in
        sync-a) args="--steps $half --modes sync" ;;
        sync-b) args="--first-step $half --steps $half --modes sync" ;;
        async) args="--steps $steps --modes async" ;;
        spec) args="--steps $steps --modes async+spec --speculate" ;;
        *) log "unknown case $case"; exit 2 ;;
      esac
      bench "$case" 500 --workload genagents-day --window busy --agents "$agents" $args ;;
    *) log "unknown case $case (busy25 busy100 long{25,100}-{sync-a,sync-b,async,spec})"; exit 2 ;;
  esac
done
log "done"

# Sourced by the probe scripts from probe 6 on, run from the repo root on the GPU machine: its set-up (.whl/ holds
# the wheels that machine lacks, pycocotools) and the helpers every probe uses. Each probe sets SUBSET (an array of
# `key=value` overrides every one of its studies shares) before it calls `study`. .whl/ (git-ignored) is made here,
# for the GPU machine's Python 3.12, by
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl pycocotools liger-kernel
set -u
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
LIMIT=${LIMIT:-560}

# probe_setup NAME: the wheels installed, W=runs/NAME, the card's name in $W/gpu.txt.
probe_setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  W=runs/$1; mkdir -p "$W"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
}

# study NAME [key=value ...]: `ssmvlm study --preset paper` into $W/NAME with ${SUBSET[@]} and the arguments, in
# the background, stopped after $LIMIT s (rerunning the probe on the same warm machine resumes it); log $W/NAME.log.
study() {
  local name=$1; shift
  ( /usr/bin/time -f "wall %e s" timeout "$LIMIT" python3 -m ssmvlm.cli study --preset paper --out "$W/$name" \
      "${SUBSET[@]}" "$@" >> "$W/$name.log" 2>&1
    echo "$name exit $?" >> "$W/$name.log" ) &
}

# wait_for_pretraining STUDY COUNT: until COUNT pretraining cells of $W/STUDY are done (at most $LIMIT s).
wait_for_pretraining() {
  for _ in $(seq 1 "$LIMIT"); do
    [ "$(ls "$W/$1"/runs/pretrain/*/DONE 2>/dev/null | wc -l)" -ge "$2" ] && return; sleep 1
  done
}

# benchmark_data STUDY: waits (at most $LIMIT s) for STUDY's benchmark dataset cell (the one with a test split)
# and prints its data folder.
benchmark_data() {
  for _ in $(seq 1 "$LIMIT"); do
    for cell in "$W/$1"/runs/dataset/*/; do
      [ -f "$cell/DONE" ] && [ -d "$cell/data/test" ] && { echo "${cell}data"; return; }
    done
    sleep 1
  done
}

# symbolic NAME DATA [option ...]: symbolic_probe.py on the card, on the dataset folder DATA, into $W/NAME (stopped
# after $LIMIT s; a rerun skips an arm that finished); log $W/NAME.log.
symbolic() {
  local name=$1 data=$2; shift 2
  timeout "$LIMIT" python3 benchmarks/signal_probes/symbolic_probe.py --data "$data" --out "$W/$name" --device cuda \
    "$@" >> "$W/$name.log" 2>&1
}

# pretrain_scenes STUDY: waits (at most $LIMIT s) for STUDY's pretraining scenes (the dataset cell in the
# `pretrain` namespace) and prints their data folder.
pretrain_scenes() {
  for _ in $(seq 1 "$LIMIT"); do
    for cell in "$W/$1"/runs/dataset/*/; do
      [ -f "$cell/DONE" ] && grep -q '"namespace": "pretrain"' "$cell/cell.json" && { echo "${cell}data"; return; }
    done
    sleep 1
  done
}

# seed_from STUDY NAME...: copies of STUDY's dataset and pretraining cells in each study NAME, which then reuses
# them (cells are content-addressed), so every arm of a probe reads the same encoders.
seed_from() {
  local source=$1; shift
  for name in "$@"; do
    mkdir -p "$W/$name/runs"; cp -rn "$W/$source/runs/dataset" "$W/$source/runs/pretrain" "$W/$name/runs/"
  done
}

# seed_with_warmup_from STUDY NAME...: seed_from, and STUDY's LLM warm-up cell too.
seed_with_warmup_from() {
  local source=$1
  seed_from "$@"
  shift
  for name in "$@"; do cp -rn "$W/$source/runs/warmup" "$W/$name/runs/"; done
}

# pack NAME STUDY...: each study's report (written now if its run was stopped), one summary table over them
# ($W/NAME_summary.md), and their reports, tables, logs and cell results, without datasets or checkpoints (too
# large to come back), in $OUT/NAME.tgz.
pack() {
  local name=$1; shift
  local folders=()
  for study in "$@"; do
    [ -f "$W/$study/report.md" ] || python3 -m ssmvlm.cli study report "$W/$study" >> "$W/$study.log" 2>&1
    folders+=("$W/$study")
  done
  python3 benchmarks/signal_probes/summarize.py "${folders[@]}" | tee "$W/${name}_summary.md"
  { find "${folders[@]}" -path '*/runs/dataset' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' \
      -o -name DONE -o -name '*.jsonl' -o -name 'spec.yaml' \) -print
    for study in "$@"; do echo "$W/$study.log"; done
    echo "$W/gpu.txt" "$W/${name}_summary.md" | tr ' ' '\n'; } | tar czf "$OUT/$name.tgz" -T -
  for study in "$@"; do grep -h "wall\|exit" "$W/$study.log"; done
}

# step_speed DATA: the preset's VLM step time on the benchmark DATA with `compile-all` and `compile` (the preset),
# six processes (device-bound on the card) and then one (host-bound), each while $DEADLINE leaves more than a minute;
# the JSONs and $W/speed.log in $OUT/speed.tgz.
step_speed() {
  local procs kernels left
  for procs in 6 1; do
    for kernels in compile-all compile; do
      left=$(( DEADLINE - $(date +%s) ))
      [ "$left" -gt 60 ] && timeout "$left" python3 benchmarks/vlm_stage_speed.py \
        --out "$W/speed/${kernels}_procs$procs" --data "$1" --procs "$procs" --steps 300 --label "$kernels" \
        --set "distributed.llm_kernels=$kernels" 2>&1 | tail -1 | tee -a "$W/speed.log"
    done
  done
  tar czf "$OUT/speed.tgz" $(find "$W/speed" -name '*.json' 2>/dev/null) "$W/speed.log" 2>/dev/null
}

# budget_pretrain BACKBONE IMAGES STUDY: BACKBONE's classification pretraining with the auxiliary targets for IMAGES
# images on STUDY's pretraining scenes, four held-out evaluations, into $W/budget_BACKBONE (stopped at $DEADLINE; a
# finished run is skipped); log $W/budget_BACKBONE.log.
budget_pretrain() {
  local out=$W/budget_$1 data
  [ -f "$out/metrics.json" ] && return
  data=$(pretrain_scenes "$3")
  timeout "$(( DEADLINE - $(date +%s) ))" python3 -m ssmvlm.cli pretrain run --backbone "$1" --data "$data" \
    --out "$out" --images-seen "$2" --batch-size 256 --image-size 96 --device cuda --threads 2 --set evals=4 \
    --set auxiliary_targets=true >> "$out.log" 2>&1
}

# pack_budgets BACKBONE ...: each budget_pretrain run's held-out evaluations into $W/budget.log, and that file with
# the runs' logs and JSON files into $OUT/budget.tgz.
pack_budgets() {
  local backbone
  for backbone in "$@"; do
    echo "budget_$backbone"; grep -h '"eval"' "$W/budget_$backbone"/metrics.jsonl 2>/dev/null
  done | tee "$W/budget.log"
  tar czf "$OUT/budget.tgz" "$W/budget.log" $(for backbone in "$@"; do
    echo "$W/budget_$backbone.log"; find "$W/budget_$backbone" -name '*.json*' 2>/dev/null; done) 2>/dev/null
}

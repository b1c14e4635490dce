#!/usr/bin/env bash
# The full-size runs the open issues still need, on one GPU machine, in four device calls of
# at most ten minutes each (device tool: carry [".whl1", ".whl", ".work/clips", ".work/clips24",
# ".work/clips72"]; `.whl*` hold the wheels the machine lacks, `.work/clips*` 8, 24 and 72 clips
# of end_to_end.write_clips, which needs PyAV to encode):
#
#   bash benchmarks/closing_runs.sh cli      # flowtrace run/pathways/show/check as typed; LongVA
#   bash benchmarks/closing_runs.sh steady   # the four sweeps, 72 samples: four runs then one
#                                            # pass in one process, and a pass in a fresh one
#   bash benchmarks/closing_runs.sh scale    # 13B and 32 frames, one pass; the store's share
#   bash benchmarks/closing_runs.sh programs # issue 32's timed programs over 8 samples (steady)
#
# Each writes its logs and the stores worth reading back (a tarball) under $OUT, and prints the
# JSON lines of its measurements at the end (without $OUT, into a temporary folder). A CPU check
# of the script itself, at the toy's shape: TINY=1 DEVICE=cpu PYTHON=python bash closing_runs.sh cli
set -o pipefail
R=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
# The GPU machine lacks these: install the carried wheels there (nothing here, where they are).
if ! $PY -c "import nnsight, zarr, decord, altair" 2> /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$R"/.whl1/*.whl "$R"/.whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$R
fi
export PYTHONUNBUFFERED=1
CLIPS=${CLIPS:-$R/.work/clips}
CLIPS24=${CLIPS24:-$R/.work/clips24}
CLIPS72=${CLIPS72:-$R/.work/clips72}
TINY=${TINY:-}  # non-empty: the toy's shape on the CPU (checks the script, measures nothing)
cd "$R/benchmarks"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
case "$1" in
cli)
    # Issues 33 and 34: `flowtrace pathways` at 7B (a flow map first), beside run/show/check.
    timeout 420 $PY cli_7b.py --clips "$CLIPS" --work /tmp/cli7b ${TINY:+--tiny} \
        --only flow_map,pathways,cross_frame,readme_program,show,check > "$OUT/1-cli.log" 2>&1
    (cd /tmp/cli7b && tar czf "$OUT/cli-stores.tgz" --exclude='*.png' ./*.zarr pathways)
    # Issue 36: LongVA-7B (Qwen2 decoder, CLIP tower) at full size with random weights.
    timeout 150 $PY adapters_full_size.py --device "${DEVICE:-cuda}" ${TINY:+--shape tiny} \
        --models LongVA-7B > "$OUT/2-longva.log" 2>&1 ;;
steady)
    # Issue 37: four runs then one pass in one process (the long-lived case), then a pass in a
    # fresh process.
    SHAPE=${TINY:+toy}
    timeout 330 $PY end_to_end.py --shape "${SHAPE:-7b}" --device "${DEVICE:-cuda}" \
        --clips "$CLIPS72" --work /tmp/e1 --skip-engine-only > "$OUT/3-e2e-7b.log" 2>&1
    timeout 200 $PY end_to_end.py --shape "${SHAPE:-7b}" --device "${DEVICE:-cuda}" \
        --clips "$CLIPS72" --work /tmp/e2 --skip-engine-only --runs one_pass \
        > "$OUT/4-fresh.log" 2>&1 ;;
scale)
    # Issue 37: 13B and 32 frames, one pass each (peak memory in the summary); the store's share.
    SHAPE=${TINY:+toy}
    timeout 180 $PY end_to_end.py --shape "${SHAPE:-13b}" --device "${DEVICE:-cuda}" \
        --clips "$CLIPS24" --work /tmp/e3 --skip-engine-only --runs one_pass > "$OUT/5-13b.log" 2>&1
    timeout 270 $PY end_to_end.py --shape "${SHAPE:-7b}" --device "${DEVICE:-cuda}" --frames 32 \
        --clips "$CLIPS24" --work /tmp/e4 --skip-engine-only --runs one_pass > "$OUT/6-32f.log" 2>&1
    timeout 120 $PY store_cost.py --shape "${SHAPE:-7b}" --device "${DEVICE:-cuda}" \
        --clips "$CLIPS" > "$OUT/7-store-cost.log" 2>&1 ;;
programs)
    # Issue 32: the timed programs past their fixed costs (counterfactual_patch left out: its
    # 25 s a sample are above its target by the FLOP count alone).
    SHAPE=${TINY:+toy}
    timeout 400 $PY programs.py --shape "${SHAPE:-7b}" --device "${DEVICE:-cuda}" \
        --clips "$CLIPS" --work /tmp/p1 --samples 8 --timed \
        --only readme_example,frame_mlp_ablation,frame_attention_mass,cross_frame,paper \
        > "$OUT/8-programs.log" 2>&1 ;;
*)
    echo "usage: closing_runs.sh cli|steady|scale|programs" >&2
    exit 2 ;;
esac
grep -h '^{' "$OUT"/*.log | cut -c1-700
echo "logs: $OUT"

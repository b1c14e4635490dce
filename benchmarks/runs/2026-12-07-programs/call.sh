# The device calls of this record, each one `run` of the device tool (python3 is the machine's,
# with the wheels it lacks carried in .whl/ and .whl1/, the clips of end_to_end.write_clips in
# .work/clips). Call 1: the smoke (every recipe, the built-in kinds as programs, the README's and
# docs' programs, 2 samples each). Call 2: time to the first result in a fresh process, the
# timed programs, the four sweeps compiled, and the CLI as typed.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl1/*.whl .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
CLIPS=$PWD/.work/clips
cd benchmarks
case "$1" in
smoke)
    timeout 540 python3 programs.py --shape 7b --device cuda --clips $CLIPS --work /tmp/w \
        --smoke-samples 2 --smoke > $OUT/1-smoke.log 2>&1
    (cd /tmp/w/out && tar czf $OUT/smoke-stores.tgz smoke_*) ;;
timed)
    timeout 100 python3 programs.py --shape 7b --device cuda --clips $CLIPS --work /tmp/w1 \
        --first-result 8 --only none > $OUT/2-first-result.log 2>&1
    timeout 200 python3 programs.py --shape 7b --device cuda --clips $CLIPS --work /tmp/w2 \
        --samples 3 --timed > $OUT/2-timed.log 2>&1
    FLOWTRACE_COMPILE=1 timeout 150 python3 programs.py --shape 7b --device cuda --clips $CLIPS \
        --work /tmp/w3 --samples 8 --timed --only paper > $OUT/2-paper-compiled.log 2>&1 ;;
cli)
    timeout 500 python3 cli_7b.py --clips $CLIPS --work /tmp/cli7b > $OUT/3-cli.log 2>&1
    (cd /tmp/cli7b && tar czf $OUT/cli-stores.tgz *.zarr paper) ;;
esac
grep -h '^{' $OUT/*.log | cut -c1-600

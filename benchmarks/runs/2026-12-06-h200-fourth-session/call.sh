set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl .work/pyspy/*.whl || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
nproc; python3 -c "import torch, transformers, sys; print(torch.__version__, transformers.__version__, sys.version)"
export PYTHONUNBUFFERED=1
R=$PWD
cd $R/benchmarks
# variants: default first and last (py-spy samples the GIL's holders during the first one's runs)
PYTHONPATH=/tmp/site:$R timeout 330 python3 end_to_end.py --shape 7b --device cuda --clips $R/.work/clips --work /tmp/new --warm-once --skip-engine-only --variants default,switch_100us,prefetch_0,default > $OUT/1-e2e_gil.log 2>&1 &
PID=$!
for i in $(seq 200); do grep -q '"warm_up"' $OUT/1-e2e_gil.log && break; sleep 1; done
timeout 40 /tmp/site/bin/py-spy record --pid $PID --gil --threads --nonblocking -r 200 -d 30 -f raw -o $OUT/1-gil.txt > $OUT/1-pyspy.log 2>&1 || echo "py-spy failed"
wait $PID
echo "fallback warnings: $(grep -c FastEngineFallback $OUT/1-e2e_gil.log)"
grep '^{' $OUT/1-e2e_gil.log
ls -la $OUT

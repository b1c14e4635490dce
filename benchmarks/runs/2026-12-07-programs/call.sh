# One device call: the wheels the machine lacks (nnsight, decord, zarr, altair and their missing
# needs, for Python 3.12) and 8 clips from benchmarks/end_to_end.write_clips, carried.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl1/*.whl .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
cd benchmarks
timeout 500 python3 programs.py --shape 7b --device cuda --clips $PWD/../.work/clips --work /tmp/w --samples 4 --timed > $OUT/1-programs-timed.log 2>&1

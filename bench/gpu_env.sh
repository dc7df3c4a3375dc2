# Source this on a GPU machine without registries (see ../shared/GPU.md):
#   . bench/gpu_env.sh
# Installs the carried wheels (.whl/, e.g. optuna, sqlalchemy, apache-tvm-ffi)
# into /tmp/site and maps the repository's folders onto the braze namespace
# (braze.ir -> ir/, ...) with a symlink shim, the same mapping as pyproject.toml.
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ROOT"/.whl/*.whl
fi
rm -rf /tmp/braze_shim && mkdir -p /tmp/braze_shim/braze
cp "$ROOT"/braze/*.py /tmp/braze_shim/braze/
for d in ir compiler passes autotune; do ln -s "$ROOT/$d" "/tmp/braze_shim/braze/$d"; done
export PYTHONPATH="/tmp/braze_shim:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
python3 -c "import braze, torch, triton; print('braze', braze.__version__, 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
set +e

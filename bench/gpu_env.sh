# Source this on a GPU machine without registries (see ../shared/GPU.md):
#   . bench/gpu_env.sh
# Installs the carried wheels (.whl/, e.g. optuna, sqlalchemy, apache-tvm-ffi)
# into /tmp/site and maps the repository's folders onto the braze namespace
# (braze.ir -> ir/, ...) as braze/__init__.py does for a source checkout.
set -e
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$ROOT"/.whl/*.whl
fi
export PYTHONPATH="$ROOT:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
python3 -c "import braze, torch, triton; print('braze', braze.__version__, 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
set +e

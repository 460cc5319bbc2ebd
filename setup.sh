#!/usr/bin/env bash
# Sets up lmc_tf on a fresh machine; quick when nothing changed.
#   ./setup.sh          .venv with requirements.txt (TensorFlow 2.21), and PyTorch CPU for
#                       the reference tests (requirements-reference.txt)
#   ./setup.sh tf2.16   .venv-tf2.16 with requirements-tf2.16.txt (the TPU images' TensorFlow)
#  - a virtual environment with the pinned packages of its requirements file
#    (installed with --no-deps: tf-keras and tensorflow-model-optimization would
#    otherwise pull the 570 MB CUDA tensorflow wheel over tensorflow-cpu);
#  - lmc_tf itself installed there in editable mode, so `.venv/bin/python -m
#    lmc_tf.train` works from any directory and runs this checkout's code;
#  - Fashion-MNIST under /usr/share/datasets/fashion-mnist (Debian's
#    dataset-fashion-mnist) when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
requirements=requirements.txt
if [ $# -gt 0 ]; then
  venv=.venv-$1
  requirements=requirements-$1.txt
  if [ ! -f "$requirements" ]; then
    echo "error: no $requirements: give no argument, or one of:" \
         "$(ls requirements-*.txt | sed 's/requirements-//; s/\.txt//' | tr '\n' ' ')" >&2
    exit 1
  fi
fi

python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
want=$(cat "$requirements" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$requirements"
  echo "$want" > "$venv/.requirements.sha256"
fi
# The test-only PyTorch of tests/reference/ (requirements-reference.txt): the CPU build of
# torch 2.13.0 that lies in /opt/wheels on this project's machines. Where it cannot be
# had, the reference tests skip themselves; lmc_tf itself never needs it.
if [ "$venv" = .venv ]; then
  want=$(cat requirements-reference.txt | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$venv/.reference.sha256" 2>/dev/null)" != "$want" ]; then
    links=()
    if [ -d /opt/wheels ]; then links=(--find-links /opt/wheels); fi
    if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        "${links[@]}" -r requirements-reference.txt; then
      echo "$want" > "$venv/.reference.sha256"
    else
      echo "warning: PyTorch (requirements-reference.txt) is not installable here: the" \
           "reference tests in tests/reference/ will be skipped" >&2
    fi
  fi
fi

# find_spec locates lmc_tf without importing it (and TensorFlow); -I leaves the current
# directory off the path, so only an install can find it.
found=$("$venv/bin/python" -I -c 'import importlib.util; print(importlib.util.find_spec("lmc_tf").origin)' 2>/dev/null || true)
if [ "$found" != "$(pwd -P)/lmc_tf/__init__.py" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
  rm -rf lmc_tf.egg-info  # the build's by-product; the install lives in the venv
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi

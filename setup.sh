#!/usr/bin/env bash
# Sets up lmc_tf on a fresh machine; quick when nothing changed.
#  - a virtual environment at .venv with the pinned packages of requirements.txt
#    (installed with --no-deps: tf-keras and tensorflow-model-optimization would
#    otherwise pull the 570 MB CUDA tensorflow wheel over tensorflow-cpu);
#  - Fashion-MNIST under /usr/share/datasets/fashion-mnist (Debian's
#    dataset-fashion-mnist) when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
want=$(cat requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi

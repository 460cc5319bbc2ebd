#!/usr/bin/env bash
# Installs lmc_tf on one Cloud TPU VM worker; `tpu/launch.py install` runs it on every worker
# from the unpacked project (~/lmc_tf). Run again, it only checks.
#
# TensorFlow is the one of the TPU runtime image (a tpu-vm-tf-* --version), never the
# tensorflow-cpu of requirements.txt: the image's build is the one that drives the TPU. So:
#  - a virtual environment at ~/lmc_tf/.venv that sees the image's packages
#    (--system-site-packages);
#  - tf-keras pinned to the image's TensorFlow minor version (~=X.Y.0), and
#    tensorflow-model-optimization, both installed without dependencies;
#  - tpu/requirements-tpu.txt under constraints that hold every package the image already
#    has (TensorFlow, numpy, protobuf, ...) at its version;
#  - a check that TensorFlow is still the image's and that tf.keras is tf-keras.
# With TENSORFLOW_TPU=X.Y.Z set and no TensorFlow on the image (e.g. tpu-ubuntu2204-base),
# tensorflow-tpu==X.Y.Z is installed first from PyPI with libtpu's release index (untested).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
worker=$(hostname)

tensorflow_dist() {  # "DIST VERSION" of the TensorFlow that $1 sees, or nothing
  "$1" - <<'EOF'
import importlib.metadata as metadata
for name in ('tensorflow', 'tensorflow-tpu', 'tensorflow-cpu', 'tf-nightly', 'tf-nightly-tpu'):
  try:
    print(name, metadata.version(name))
    break
  except metadata.PackageNotFoundError:
    pass
EOF
}

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv --system-site-packages .venv 2>/dev/null; then
    rm -rf .venv
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    "$python" -m venv --system-site-packages .venv
  fi
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check --quiet)

read -r dist version <<<"$(tensorflow_dist .venv/bin/python)" || true
if [ -z "${dist:-}" ]; then
  if [ -z "${TENSORFLOW_TPU:-}" ]; then
    echo "error: no TensorFlow on $worker: create the TPU VM with a tpu-vm-tf-* --version," \
         "or install with --tensorflow_tpu=VERSION" >&2
    exit 1
  fi
  "${pip[@]}" install "tensorflow-tpu==$TENSORFLOW_TPU" \
      -f https://storage.googleapis.com/libtpu-tf-releases/index.html
  read -r dist version <<<"$(tensorflow_dist .venv/bin/python)"
fi
minor=$(echo "$version" | cut -d. -f1,2)

# Everything already installed stays as it is (tf-keras and pip's own tools excepted).
.venv/bin/python - > .venv/constraints.txt <<'EOF'
import importlib.metadata as metadata
seen = {'tf-keras', 'tf_keras', 'pip', 'setuptools', 'wheel'}
for dist in metadata.distributions():
  name = dist.metadata['Name']
  if name and name.lower() not in seen:
    seen.add(name.lower())
    print(f'{name}=={dist.version}')
EOF
# Without dependencies: tf-keras needs only TensorFlow, which must stay the image's; and
# tensorflow-model-optimization 0.8.1 declares absl-py~=1.2 while TensorFlow ships absl-py 2
# (setup.sh installs it --no-deps for the same reason; it runs with absl-py 2).
"${pip[@]}" install --no-deps "tf-keras~=$minor.0" tensorflow-model-optimization==0.8.1
"${pip[@]}" install -c .venv/constraints.txt -r tpu/requirements-tpu.txt

TPU_LOAD_LIBRARY=0 .venv/bin/python - "$dist" "$version" "$worker" <<'EOF'
import importlib.metadata as metadata
import sys
import lmc_tf  # sets TF_USE_LEGACY_KERAS before TensorFlow loads
import tensorflow as tf
import tf_keras
dist, version, worker = sys.argv[1:]
if metadata.version(dist) != version:
  sys.exit(f'error: {dist} changed from {version} to {metadata.version(dist)} on {worker}: '
           'a package pulled another TensorFlow; see tpu/requirements-tpu.txt')
if 'tf_keras' not in tf.keras.__name__:
  sys.exit(f'error: tf.keras is {tf.keras.__name__}, not tf-keras, on {worker}')
print(f'lmc_tf ready on {worker}: {dist} {tf.__version__}, tf-keras {tf_keras.__version__}')
EOF

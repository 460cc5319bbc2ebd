#!/usr/bin/env bash
# Runs `bazel test //...` here, offline, with Debian's Bazel 4.2.3 (bazel-bootstrap).
#
#   tools/bazel_test.sh                    # bazel test //...
#   tools/bazel_test.sh build              # bazel build //... only
#   tools/bazel_test.sh test //:test_steps --nocache_test_results   # other targets, flags
#
# Installs bazel-bootstrap and bazel-bootstrap-source with apt-get when missing.
# The repositories Bazel would download are local (WORKSPACE); the flags that
# need no absolute path are in .bazelrc; the interpreter, the repo's .venv
# (./setup.sh), is passed here since it has one. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ ! -x .venv/bin/python ]; then
  echo "error: no .venv here: run ./setup.sh first" >&2
  exit 1
fi

if ! command -v bazel-4 >/dev/null || [ ! -d /usr/src/bazel-bootstrap/mock_repos ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  install() {
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o Dpkg::Use-Pty=0 \
      bazel-bootstrap bazel-bootstrap-source >/dev/null
  }
  echo "Installing Debian's bazel-bootstrap and bazel-bootstrap-source (Bazel 4.2.3)" >&2
  install || { $sudo apt-get update -qq && install; }
fi

command=test
if [ $# -gt 0 ] && { [ "$1" = test ] || [ "$1" = build ]; }; then
  command=$1
  shift
fi
targets=(//...)
for arg in "$@"; do
  case "$arg" in //*|:*) targets=() ;; esac
done

exec bazel-4 "$command" --python_path="$root/.venv/bin/python" "$@" "${targets[@]}"

"""Shared fixtures. TensorFlow's import costs seconds, so most tests run in this one process."""
import dataclasses
import os
import re
import subprocess
import sys

import lmc_tf  # pylint: disable=unused-import  (must precede TensorFlow)

import gin
import pytest

from lmc_tf import cli
from lmc_tf import config as config_lib
from lmc_tf import data as data_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST = '/usr/share/datasets/fashion-mnist'


def pytest_collection_modifyitems(config, items):
  """Leaves out `long` tests unless -m names them (-m long, -m 'long and not slow').

  Done here, not with addopts' -m 'not long': a -m on the command line (-m 'not
  slow') replaces that one, and would bring the long tests back.
  """
  if re.search(r'\blong\b', config.getoption('markexpr') or ''):
    return
  long_tests = [item for item in items if item.get_closest_marker('long')]
  if long_tests:
    config.hook.pytest_deselected(items=long_tests)
    items[:] = [item for item in items if not item.get_closest_marker('long')]


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope='session')
def fashion_mnist_splits():
  if not os.path.isdir(FASHION_MNIST):
    pytest.fail(f'{FASHION_MNIST} is missing: run ./setup.sh')
  return data_lib.local_files.load_idx_directory(FASHION_MNIST)


def fashion_mnist(splits, **config):
  """In-memory Fashion-MNIST with the given DatasetConfig fields, reusing loaded arrays."""
  dataset_config = config_lib.DatasetConfig(name='fashion_mnist', **config)
  return data_lib.registry.InMemoryData('fashion_mnist', data_lib.DATASETS['fashion_mnist'],
                                        dataset_config, splits)


def lenet(splits, bindings):
  """(hparams, options, data) of lenet_fashion_mnist.gin with `bindings`, on loaded arrays."""
  hparams, options = parse('lenet_fashion_mnist.gin', bindings=bindings)
  data = fashion_mnist(splits, **{k: v for k, v in dataclasses.asdict(hparams.dataset).items()
                                  if k != 'name'})
  return hparams, options, data


def analysis(hparams, options, interp, model_dir, data, masks=None, parent_dir=None, **spec):
  """An instability.Analysis of the Spec that `spec` (make_spec's arguments) gives."""
  from lmc_tf.analysis import instability  # pylint: disable=g-import-not-at-top
  spec = instability.make_spec(hparams, options, interp, data, has_mask=masks is not None,
                               **spec)
  return instability.Analysis(spec, options, model_dir, data, masks=masks,
                              parent_dir=parent_dir)


def parse(*gin_files, bindings=()):
  return cli.parse_gin(list(gin_files), list(bindings))


def run_binary(module, *args, timeout=300, env=None):
  """Runs `python -m module args` from the repo root; returns the CompletedProcess.

  `env`: variables to set (a value of None removes one) over this process's environment.
  """
  environment = dict(os.environ)
  for name, value in (env or {}).items():
    environment.pop(name, None)
    if value is not None:
      environment[name] = value
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env=environment)

"""Shared fixtures. TensorFlow's import costs seconds, so most tests run in this one process."""
import os
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


def parse(*gin_files, bindings=()):
  return cli.parse_gin(list(gin_files), list(bindings))


def run_binary(module, *args, timeout=300):
  """Runs `python -m module args` from the repo root; returns the CompletedProcess."""
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)

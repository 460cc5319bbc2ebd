import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, fashion_mnist, parse, run_binary
from lmc_tf import config as config_lib
from lmc_tf import data as data_lib
from lmc_tf import io_utils
from lmc_tf.errors import UserError
from lmc_tf.training import optim, trainer

CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, 'gin_configs', '*.gin'))
                 if not p.endswith('quick.gin'))


def test_every_table_1_config_is_there():
  assert CONFIGS == sorted([
      'lenet_mnist.gin', 'lenet_fashion_mnist.gin', 'resnet20_cifar10.gin',
      'resnet20_low_cifar10.gin', 'resnet20_warmup_cifar10.gin', 'vgg16_cifar10.gin',
      'vgg16_low_cifar10.gin', 'vgg16_warmup_cifar10.gin', 'resnet50_imagenet.gin',
      'inception_v3_imagenet.gin'])


@pytest.mark.slow
@pytest.mark.parametrize('gin_file', CONFIGS)
def test_every_config_trains_under_quick_gin(gin_file, tmp_path):
  hparams, _ = parse(gin_file, 'quick.gin')
  assert hparams.training.training_steps == '200it'
  # Data that is not on this machine is replaced by random tensors of its shape; ImageNet
  # models take a small batch so that a step fits a CPU test.
  bindings = ["TrainingConfig.training_steps = '2it'", 'DatasetConfig.synthetic = True']
  if 'imagenet' in gin_file:
    bindings += ['TrainingConfig.batch_size = 4', 'DatasetConfig.train_subset = 8',
                 'DatasetConfig.test_eval_examples = 8']
  hparams, options = parse(gin_file, 'quick.gin', bindings=bindings)
  data = data_lib.load(hparams.dataset)
  metrics = trainer.train(hparams, options, str(tmp_path), data)
  assert metrics['iterations'] == 2
  assert np.isfinite(metrics['test_loss'])
  assert (tmp_path / 'operative_config.gin').exists() and (tmp_path / 'weights.npz').exists()


def test_learning_rate_schedules():
  step = optim.LearningRate(0.1, 'step', 0, [10, 20], 0.1, 30, 0.0)
  assert [round(float(step(i)), 6) for i in (0, 9, 10, 19, 20, 29)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
  warm = optim.LearningRate(0.03, 'step', 100, [], 0.1, 300, 0.0)
  assert [round(float(warm(i)), 6) for i in (0, 50, 100, 200)] == [0.0, 0.015, 0.03, 0.03]
  linear = optim.LearningRate(0.03, 'linear', 0, [], 0.1, 100, 0.005)
  assert [round(float(linear(i)), 6) for i in (0, 50, 100)] == [0.03, 0.0175, 0.005]


def _lenet(tmp_path, fashion_mnist_splits, bindings=(), name='run'):
  hparams, options = parse('lenet_fashion_mnist.gin', bindings=[
      "TrainingConfig.training_steps = '300it'", 'DatasetConfig.train_subset = 6000',
      'DatasetConfig.test_eval_examples = 2000', *bindings])
  data = fashion_mnist(fashion_mnist_splits, **{
      k: v for k, v in hparams.dataset.__dict__.items() if k != 'name'})
  return trainer.train(hparams, options, str(tmp_path / name), data)


def test_training_learns_and_is_deterministic(tmp_path, fashion_mnist_splits):
  first = _lenet(tmp_path, fashion_mnist_splits, name='a')
  second = _lenet(tmp_path, fashion_mnist_splits, name='b')
  assert first['test_error'] < 0.3
  assert first['test_loss'] == second['test_loss']
  a, b = (io_utils.read_npz(str(tmp_path / n / 'weights.npz')) for n in 'ab')
  assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
  checkpoints = sorted(os.listdir(tmp_path / 'a' / 'checkpoints'))
  # Checkpoints at 0, every epoch (100 iterations) and the end.
  assert {'ckpt-0.index', 'ckpt-100.index', 'ckpt-200.index', 'ckpt-300.index'} <= set(checkpoints)
  # Asking for a finished run again reads its metrics.
  assert _lenet(tmp_path, fashion_mnist_splits, name='a') == first


def test_bfloat16_training_keeps_float32_weights_masks_and_determinism(tmp_path,
                                                                       fashion_mnist_splits):
  """TrainingConfig.precision = 'mixed_bfloat16': the layers compute in bfloat16, the
  weights (and masks) stay float32, it learns, the same seeds give the same weights, and its
  numbers are not float32's."""
  bindings = ["TrainingConfig.precision = 'mixed_bfloat16'"]
  first = _lenet(tmp_path, fashion_mnist_splits, bindings, name='a')
  second = _lenet(tmp_path, fashion_mnist_splits, bindings, name='b')
  plain = _lenet(tmp_path, fashion_mnist_splits, name='float32')
  assert first['test_error'] < 0.3 and first['test_loss'] == second['test_loss']
  assert first['test_loss'] != plain['test_loss']
  a, b = (io_utils.read_npz(str(tmp_path / n / 'weights.npz')) for n in 'ab')
  assert all(v.dtype == np.float32 and np.array_equal(v, b[k]) for k, v in a.items())
  hparams, options = parse('lenet_fashion_mnist.gin', bindings=[
      "TrainingConfig.training_steps = '300it'", *bindings])
  data = fashion_mnist(fashion_mnist_splits)
  run = trainer.Run(hparams, options, str(tmp_path / 'built'), data)
  assert {l.compute_dtype for l in run.model.layers[1:]} == {'bfloat16'}
  assert {v.dtype.name for v in run.model.trainable_variables} == {'float32'}
  with pytest.raises(UserError, match="precision = 'float16' is unknown"):
    _lenet(tmp_path, fashion_mnist_splits, ["TrainingConfig.precision = 'float16'"], name='c')


def test_xla_by_default_where_the_whole_train_loop_compiles(fashion_mnist_splits):
  """RunOptions.jit_compile = None compiles LeNet's training on in-memory data under the
  default strategy (its whole train loop one XLA program), not a convolutional network, not
  under mirrored, and no evaluation; True and False are taken as they are."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hparams, _ = parse('lenet_fashion_mnist.gin')
  lenet_data = fashion_mnist(fashion_mnist_splits)
  lenet = trainer.build_model(hparams, lenet_data)
  hparams, _ = parse('resnet20_cifar10.gin', bindings=['DatasetConfig.synthetic = True'])
  resnet_data = data_lib.load(hparams.dataset)
  resnet = trainer.build_model(hparams, resnet_data)
  default = tf.distribute.get_strategy()
  mirrored = tf.distribute.MirroredStrategy(['/cpu:0'])
  assert trainer.compiles(None, lenet, lenet_data, default)
  assert not trainer.compiles(None, lenet, lenet_data, mirrored)
  assert not trainer.compiles(None, resnet, resnet_data, default)
  assert not trainer.compiles(None, lenet, lenet_data, default, evaluation=True)
  for setting in (True, False):
    assert trainer.compiles(setting, resnet, resnet_data, default) == setting
    assert trainer.compiles(setting, lenet, lenet_data, mirrored) == setting
    assert trainer.compiles(setting, lenet, lenet_data, default, evaluation=True) == setting


def _trained_weights(hparams, options, data, run_dir, gathers_batches):
  run = trainer.Run(hparams, options, run_dir, data)
  # In-memory data under the default strategy: gathered by an XLA-compiled LeNet only, which
  # the default (jit_compile None) compiles.
  assert run.gathers_batches == (options.jit_compile is not False and
                                 'lenet' in hparams.model.name)
  run.gathers_batches = gathers_batches
  run.restore_or_initialize()
  run.train()
  return trainer.weights_dict(run.model)


@pytest.mark.parametrize('config', ['lenet', 'resnet20'])
def test_the_loop_gathering_its_batches_trains_as_the_tf_data_one(config, tmp_path,
                                                                  fashion_mnist_splits):
  """Steps.gathered_train_loop (what XLA-compiled runs on in-memory data under the default
  strategy use) gives bitwise the weights of the tf.data loop: CIFAR's augmentation
  included, over an epoch's end and several chunks of steps. Under XLA its runs are
  deterministic and close to the uncompiled ones."""
  if config == 'lenet':
    bindings = ["TrainingConfig.training_steps = '150it'", 'DatasetConfig.train_subset = 6000',
                "RunOptions.log_every = '40it'"]
    hparams, options = parse('lenet_fashion_mnist.gin',
                             bindings=bindings + ['RunOptions.jit_compile = False'])
    data = fashion_mnist(fashion_mnist_splits, train_subset=6000)
  else:
    bindings = ['DatasetConfig.synthetic = True', "TrainingConfig.training_steps = '12it'",
                "RunOptions.log_every = '5it'", 'TrainingConfig.batch_size = 32']
    hparams, options = parse('resnet20_cifar10.gin', bindings=bindings)
    data = data_lib.load(hparams.dataset)  # 256 examples: 8 iterations an epoch
  gathered = _trained_weights(hparams, options, data, str(tmp_path / 'gathered'), True)
  piped = _trained_weights(hparams, options, data, str(tmp_path / 'piped'), False)
  assert sorted(gathered) == sorted(piped)
  for name in gathered:
    np.testing.assert_array_equal(gathered[name], piped[name], err_msg=name)
  if config == 'lenet':
    hparams, options = parse('lenet_fashion_mnist.gin',
                             bindings=bindings + ['RunOptions.jit_compile = True'])
    xla = [_trained_weights(hparams, options, data, str(tmp_path / f'xla{i}'), True)
           for i in range(2)]
    for name in gathered:
      np.testing.assert_array_equal(xla[0][name], xla[1][name], err_msg=name)
      # Adam moves a few weights a step's size apart where gradients are near 0.
      distance = np.linalg.norm(xla[0][name] - gathered[name])
      assert distance < 1e-2 * np.linalg.norm(gathered[name]), name


def test_an_xla_gathered_run_resumed_from_a_checkpoint_ends_bitwise_the_same(
    tmp_path, fashion_mnist_splits):
  """The XLA loop's batches come from (seed, iteration) alone: a run resumed at a checkpoint
  in the middle of an epoch ends with the uninterrupted run's weights, bit for bit."""
  hparams, options = parse('lenet_fashion_mnist.gin', bindings=[
      "TrainingConfig.training_steps = '150it'", 'DatasetConfig.train_subset = 6000',
      "RunOptions.log_every = '40it'", "RunOptions.checkpoint_at = ('80it',)",
      'RunOptions.jit_compile = True'])
  data = fashion_mnist(fashion_mnist_splits, train_subset=6000)
  whole = _trained_weights(hparams, options, data, str(tmp_path / 'whole'), True)
  resumed_dir = tmp_path / 'resumed'
  shutil.copytree(tmp_path / 'whole', resumed_dir)
  for path in glob.glob(str(resumed_dir / 'checkpoints' / 'ckpt-*')):
    if int(os.path.basename(path).split('.')[0].split('-')[1]) > 80:
      os.remove(path)
  run = trainer.Run(hparams, options, str(resumed_dir), data)
  run.restore_or_initialize()
  assert run.iteration == 80 and run.gathers_batches
  run.train()
  for name, value in trainer.weights_dict(run.model).items():
    np.testing.assert_array_equal(value, whole[name], err_msg=name)


def test_different_config_in_the_same_directory_is_refused(tmp_path, fashion_mnist_splits):
  _lenet(tmp_path, fashion_mnist_splits, name='a')
  with pytest.raises(UserError, match='different config.*training.lr'):
    _lenet(tmp_path, fashion_mnist_splits, bindings=['TrainingConfig.lr = 0.01'], name='a')


def test_nan_loss_stops_with_the_iteration(tmp_path, fashion_mnist_splits):
  with pytest.raises(UserError, match=r'loss is (nan|inf) at iteration \d+'):
    _lenet(tmp_path, fashion_mnist_splits, bindings=[
        "TrainingConfig.optimizer = 'sgd'", 'TrainingConfig.lr = 1e30'])


def test_rewinding_point_past_the_end_is_refused(tmp_path, fashion_mnist_splits):
  with pytest.raises(UserError, match="rewinding point '5000it' is past the end"):
    _lenet(tmp_path, fashion_mnist_splits, bindings=["RunOptions.checkpoint_at = ('5000it',)"])


RESUME_ARGS = ['--gin_file=lenet_fashion_mnist.gin', '--gin_bindings=TrainingConfig.training_steps = "3000it"',
               '--gin_bindings=DatasetConfig.train_subset = 6000',
               '--gin_bindings=DatasetConfig.test_eval_examples = 1000',
               '--gin_bindings=DatasetConfig.train_eval_examples = 1000']


@pytest.mark.slow
def test_sigkill_and_resume_gives_bitwise_identical_weights(tmp_path):
  reference = run_binary('lmc_tf.train', *RESUME_ARGS, f'--model_dir={tmp_path / "ref"}')
  assert reference.returncode == 0, reference.stderr[-2000:]

  model_dir = tmp_path / 'killed'
  process = subprocess.Popen([sys.executable, '-m', 'lmc_tf.train', *RESUME_ARGS,
                              f'--model_dir={model_dir}'], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  # Kill at a random moment after the second epoch checkpoint, before the end.
  deadline = time.time() + 120
  while not (model_dir / 'checkpoints' / 'ckpt-200.index').exists():
    assert process.poll() is None and time.time() < deadline, 'training ended before the kill'
    time.sleep(0.02)
  time.sleep(random.uniform(0.0, 1.0))
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (model_dir / 'metrics.json').exists(), 'finished before the kill: lengthen the run'

  resumed = run_binary('lmc_tf.train', *RESUME_ARGS, f'--model_dir={model_dir}')
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert 'Resuming' in resumed.stderr
  a = io_utils.read_npz(str(tmp_path / 'ref' / 'weights.npz'))
  b = io_utils.read_npz(str(model_dir / 'weights.npz'))
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert (json.loads((tmp_path / 'ref' / 'metrics.json').read_text())['test_loss'] ==
          json.loads((model_dir / 'metrics.json').read_text())['test_loss'])


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))

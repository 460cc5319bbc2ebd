r"""Training throughput under the mirrored strategy (two logical CPU devices) vs the default.

  .venv/bin/python benchmarks/strategies.py [--rounds=3]

For LeNet-300-100 on Fashion-MNIST (batch 60) and ResNet-20 on CIFAR-10-shaped
synthetic data (batch 128; CIFAR-10 is not available offline), each
measurement is a fresh process that builds the run as lmc_tf.train does
(data pipeline sharded per replica, masked layers, compiled multi-step loop),
compiles, then times training steps. Rounds interleave the variants; it prints
iterations per second (median) and the median over rounds of mirrored/default.
On one CPU, two logical devices share the same cores: this measures what the
strategy machinery costs (splitting batches, all-reducing gradients), not a
speedup, which needs two real devices.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODELS = {
    'LeNet-300-100': (['lenet_fashion_mnist.gin'], 2000),
    'ResNet-20': (['resnet20_cifar10.gin'], 40),
}
SYNTHETIC_CIFAR = ['DatasetConfig.synthetic = True', 'DatasetConfig.train_subset = 5120']


def child(model, strategy_name):
  """Prints {'it_per_s': ...} for one model under one strategy."""
  import lmc_tf  # pylint: disable=unused-import,g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lmc_tf import cli  # pylint: disable=g-import-not-at-top
  from lmc_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from lmc_tf.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from lmc_tf.training import trainer  # pylint: disable=g-import-not-at-top
  if strategy_name == 'mirrored':
    strategy_lib.split_cpu(2)
  gin_files, steps = MODELS[model]
  # Uncompiled under both strategies, so the ratio is what the strategy costs (by default
  # LeNet would be XLA-compiled under the default strategy only: trainer.compiles).
  bindings = (SYNTHETIC_CIFAR if model == 'ResNet-20' else []) + ['RunOptions.jit_compile = False']
  hparams, options = cli.parse_gin(gin_files, bindings)
  data = data_lib.load(hparams.dataset)
  strategy = strategy_lib.make_strategy(strategy_name)
  with tempfile.TemporaryDirectory() as model_dir:
    run = trainer.Run(hparams, options, model_dir, data, strategy)
    run.restore_or_initialize()
    iterator = run.train_iterator(0)
    run.steps.train_loop(iterator, tf.constant(10))  # compile outside the timing
    began = time.perf_counter()
    run.steps.train_loop(iterator, tf.constant(steps))
    float(run.steps.train_loss.result())  # waits for the last step
    rate = steps / (time.perf_counter() - began)
  print(json.dumps({'it_per_s': rate, 'replicas': strategy.num_replicas_in_sync}))


def measure(model, strategy_name):
  result = subprocess.run([sys.executable, __file__, '--child', model, strategy_name],
                          capture_output=True, text=True, check=True, cwd=REPO)
  return json.loads(result.stdout.strip().splitlines()[-1])


def main(rounds):
  rates = {(m, s): [] for m in MODELS for s in ('default', 'mirrored')}
  for _ in range(rounds):
    for key in rates:
      result = measure(*key)
      assert result['replicas'] == (2 if key[1] == 'mirrored' else 1), result
      rates[key].append(result['it_per_s'])
  print(f'{rounds} rounds, {os.cpu_count()} CPUs; mirrored = 2 logical CPU devices')
  print('model           batch  default it/s  mirrored it/s  mirrored/default (median of rounds)')
  for model in MODELS:
    default, mirrored = rates[(model, 'default')], rates[(model, 'mirrored')]
    ratio = statistics.median(m / d for m, d in zip(mirrored, default))
    batch = 60 if model == 'LeNet-300-100' else 128
    print(f'{model:15s} {batch:5d} {statistics.median(default):13.1f} '
          f'{statistics.median(mirrored):14.1f} {ratio:16.2f}')
    print(f'{"":21s}all runs: default ' + ' '.join(f'{r:.1f}' for r in default) +
          '; mirrored ' + ' '.join(f'{r:.1f}' for r in mirrored))


if __name__ == '__main__':
  if len(sys.argv) == 4 and sys.argv[1] == '--child':
    child(sys.argv[2], sys.argv[3])
  else:
    rounds = 3
    for arg in sys.argv[1:]:
      if not arg.startswith('--rounds='):
        sys.exit(f'error: unknown argument {arg}: the only flag is --rounds=N')
      rounds = int(arg.split('=', 1)[1])
    main(rounds)

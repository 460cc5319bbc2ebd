r"""Step throughput of LeNet-300-100 with and without pruning wrappers.

  .venv/bin/python benchmarks/pruning_wrappers.py [--steps=3000] [--repeats=3] [--jit_compile]

Compares, in the same compiled training loop (lmc_tf.training.loop.Steps):
  plain   the Keras model, no wrappers
  lmc_tf  our MaskedLayer wrappers (masked gradient, no per-step mask work)
  tfmot   stock tfmot prune_low_magnitude (ConstantSparsity 50%, mask update
          every 100 steps, weight * mask assigned on every forward pass)
and prints iterations per second (median of interleaved repeats) and the
slowdown of each against `plain`: the median over repeats of the ratio to the
`plain` measurement of the same round, which cancels slow drifts of the machine.
With --jit_compile, the loop is the one XLA program per chunk that LeNet's real
path runs with RunOptions.jit_compile (Steps.gathered_train_loop, batches gathered
from the data held in memory); tfmot's wrapper is left out there, its step-counter
assertion has no XLA kernel.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lmc_tf  # pylint: disable=unused-import,g-import-not-at-top

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from lmc_tf import models
from lmc_tf.models import masking
from lmc_tf.training import loop

flags.DEFINE_integer('steps', 4000, 'Training steps per measurement.')
flags.DEFINE_integer('repeats', 9, 'Measurements per variant (interleaved).')
flags.DEFINE_bool('jit_compile', False, 'Measure the XLA-compiled gathered loop.')
FLAGS = flags.FLAGS
BATCH = 60


def make_variant(name, make_batch):
  model = models.build('lenet_300_100', (28, 28, 1), 10, init_seed=0)
  if name == 'lmc_tf':
    model = masking.wrap(model)
    # A real IMP-like mask (20% kept): the cost does not depend on it, but it is honest.
    rng = np.random.default_rng(0)
    masking.set_masks(model, {path: (rng.random(mask.shape) < 0.2).astype(np.float32)
                              for path, mask in masking.get_masks(model).items()})
  elif name == 'tfmot':
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=100)
    model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    for layer in model.layers:
      if hasattr(layer, 'pruning_step'):
        layer.pruning_step.assign(1)  # what tfmot's UpdatePruningStep callback does before fit
  optimizer = tf.keras.optimizers.Adam(1.2e-3)
  optimizer.build(model.trainable_variables)
  return loop.Steps(model, optimizer, tf.distribute.get_strategy(), BATCH,
                    jit_compile=FLAGS.jit_compile, make_batch=make_batch)


def run_steps(steps, iterator, count):
  if FLAGS.jit_compile:
    # The same 50 batches over and over, as the cached tf.data pipeline gives them.
    indices = tf.reshape(tf.range(count * BATCH) % (50 * BATCH), [count, BATCH])
    steps.gathered_train_loop(indices, tf.constant(0, tf.int64))
  else:
    steps.train_loop(iterator, tf.constant(count))


def measure(steps, iterator, count):
  # Compile outside the timing; XLA compiles for each loop length, so that one is run first.
  run_steps(steps, iterator, count if FLAGS.jit_compile else 10)
  began = time.perf_counter()
  run_steps(steps, iterator, count)
  float(steps.train_loss.result())  # waits for the last step
  return count / (time.perf_counter() - began)


def main(_):
  images = tf.random.stateless_uniform([BATCH * 50, 28, 28, 1], [0, 0])
  labels = tf.random.stateless_uniform([BATCH * 50], [0, 1], maxval=10, dtype=tf.int32)
  dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH).cache().repeat()
  make_batch = lambda index, iteration: (tf.gather(images, index), tf.gather(labels, index))
  names = ('plain', 'lmc_tf') if FLAGS.jit_compile else ('plain', 'lmc_tf', 'tfmot')
  variants = {name: make_variant(name, make_batch) for name in names}
  iterator = iter(dataset)
  rates = {name: [] for name in names}
  for _ in range(FLAGS.repeats):
    for name in names:
      rates[name].append(measure(variants[name], iterator, FLAGS.steps))
  loop_kind = 'XLA gathered loop' if FLAGS.jit_compile else 'uncompiled loop'
  print(f'LeNet-300-100, batch {BATCH}, {FLAGS.steps} steps x {FLAGS.repeats}, '
        f'{os.cpu_count()} CPUs, {loop_kind}')
  print('variant   it/s (median)   slowdown vs plain (median of rounds)   all runs')
  for name in names:
    slowdown = statistics.median(p / r - 1 for p, r in zip(rates['plain'], rates[name]))
    print(f'{name:8s} {statistics.median(rates[name]):10.0f} {100 * slowdown:+14.1f}%'
          '                  ' + ' '.join(f'{r:.0f}' for r in rates[name]))


if __name__ == '__main__':
  app.run(main)

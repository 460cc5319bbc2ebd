r"""How close LeNet's interpolation curves run to the matrix products they cannot avoid.

  .venv/bin/python benchmarks/interpolation.py --threads=1 [--alphas=30] [--repeats=5]

One Appendix C row of the README's analysis: the loss and error of W(a) at --alphas alphas
on the 10K test images and the first 10K training images of Fashion-MNIST, by
`Interpolator.curve` (its batched path: X W1 and X (W2 - W1) once per batch for the first
layer, the rest of the network per alpha). Beside it, in the same process, the matrix
products alone that this path has to do, on the same shapes (batches of 1000): two
1000x784 by 784x300 products per batch, and per batch and alpha a 1000x300 by 300x100 and
a 1000x100 by 100x10 product. Their ratio says how much of the curve's time is anything
but those products (the elementwise work, the loss and the error, the op dispatch).
Medians of --repeats runs, after one run to trace.
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lmc_tf  # pylint: disable=unused-import,g-import-not-at-top

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from lmc_tf import cli
from lmc_tf import data as data_lib
from lmc_tf.analysis import interpolation
from lmc_tf.training import trainer

flags.DEFINE_integer('alphas', 30, 'Alphas of the curve.')
flags.DEFINE_integer('repeats', 5, 'Runs of each measurement (the median is printed).')
FLAGS = flags.FLAGS

EXAMPLES = 10000  # per split, as Appendix C's default evaluates
BATCH = 1000


def median_seconds(fn):
  fn()  # traces
  times = []
  for _ in range(FLAGS.repeats):
    began = time.perf_counter()
    fn()
    times.append(time.perf_counter() - began)
  return statistics.median(times)


def main(_):
  cli.configure_devices()  # --threads
  hparams, _ = cli.parse_gin(['lenet_fashion_mnist.gin'], [])
  data = data_lib.load(hparams.dataset).with_eval_examples('train', EXAMPLES)
  model = trainer.build_model(hparams, data)
  weights_a = trainer.weights_dict(model)
  rng = np.random.default_rng(0)
  weights_b = {path: value + 0.05 * rng.standard_normal(value.shape).astype(np.float32)
               for path, value in weights_a.items()}
  interpolator = interpolation.Interpolator(model)
  alphas = np.linspace(0.0, 1.0, FLAGS.alphas)

  def curves():
    for split in ('test', 'train'):
      interpolator.curve(weights_a, weights_b, alphas, data, split)

  batches = 2 * EXAMPLES // BATCH
  images = tf.random.normal([BATCH, 784])
  hidden1 = tf.random.normal([BATCH, 300])
  hidden2 = tf.random.normal([BATCH, 100])
  kernels = [tf.random.normal(shape) for shape in ((784, 300), (300, 100), (100, 10))]

  @tf.function
  def products():
    total = tf.zeros([])
    for _ in tf.range(batches):
      # Each product feeds the running sum and reads it, so none is left out as unused or
      # computed once outside the loop (the scalar additions cost under 2% of the products).
      total += tf.reduce_sum(tf.matmul(images + total, kernels[0]))
      total += tf.reduce_sum(tf.matmul(images - total, kernels[0]))
      for _ in tf.range(FLAGS.alphas):
        total += tf.reduce_sum(tf.matmul(hidden1 + total, kernels[1]))
        total += tf.reduce_sum(tf.matmul(hidden2 + total, kernels[2]))
    return total

  curve_s = median_seconds(curves)
  products_s = median_seconds(lambda: products().numpy())
  cpu = subprocess.run(['sh', '-c', "lscpu | sed -n 's/^Model name: *//p'"],
                       capture_output=True, text=True, check=False).stdout.strip()
  print(f'CPU: {cpu}, {os.cpu_count()} cores, --threads={FLAGS.threads}; '
        f'{FLAGS.alphas} alphas on {EXAMPLES} test + {EXAMPLES} train examples, '
        f'median of {FLAGS.repeats}')
  print(f'Interpolator.curve, both splits   {curve_s:6.3f} s')
  print(f'their matrix products alone       {products_s:6.3f} s')
  print(f'ratio                             {curve_s / products_s:6.2f}')


if __name__ == '__main__':
  app.run(main)

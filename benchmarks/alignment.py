r"""Time of aligning two networks (lmc_tf.analysis.alignment) on this machine's CPU.

  .venv/bin/python benchmarks/alignment.py [--examples=5000] [--repeats=3]

For LeNet-300-100 (28x28x1) and ResNet-20 (32x32x3), two independently
initialized networks (init seeds 0 and 1; untrained, so weight matching may
take a different number of sweeps than on trained copies) are aligned by
  weights      weight matching (coordinate descent, seed 0)
  activations  activation matching on --examples images (random normal images:
               the time does not depend on their content)
  repair stats REPAIR's statistics of both endpoints (once per pair of networks)
  repair alpha REPAIR of the midpoint given those (once per alpha)
and the median wall time of --repeats runs is printed, with the CPU's model
name and the load average (the time of a shared CPU depends on what else runs).
Targets (issue 14): LeNet under 5 s, ResNet-20 under 60 s.
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

from lmc_tf import models
from lmc_tf.analysis import alignment
from lmc_tf.training import trainer

flags.DEFINE_integer('examples', 5000, 'Training images for activation matching and REPAIR.')
flags.DEFINE_integer('repeats', 3, 'Runs of each measurement (the median is printed).')
flags.DEFINE_integer('batch_size', 250, 'Batch size of the forward passes.')
FLAGS = flags.FLAGS

NETWORKS = (('lenet_300_100', (28, 28, 1), 5.0), ('cifar_resnet_20', (32, 32, 3), 60.0))


def cpu_model():
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return 'unknown (no lscpu)'
  for line in out.splitlines():
    if line.startswith('Model name:'):
      return line.split(':', 1)[1].strip()
  return 'unknown'


def timed(function, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = function()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times, result


def main(argv):
  del argv
  print(f'CPU: {cpu_model()}, {os.cpu_count()} cores; load average before: '
        f'{", ".join(f"{v:.1f}" for v in os.getloadavg())}')
  for name, shape, target in NETWORKS:
    spec = alignment.permutation_spec(name)
    model_a = models.build(name, shape, 10, 0)
    model_b = models.build(name, shape, 10, 1)
    scratch = models.build(name, shape, 10, 2)
    weights_a, weights_b = trainer.weights_dict(model_a), trainer.weights_dict(model_b)
    images = np.random.default_rng(0).normal(size=(FLAGS.examples,) + shape).astype(np.float32)
    results = {}
    results['weights'] = timed(
        lambda: alignment.weight_matching(spec, weights_a, weights_b, seed=0), FLAGS.repeats)
    results['activations'] = timed(
        lambda: alignment.activation_matching(spec, model_a, model_b, images, FLAGS.batch_size),
        FLAGS.repeats)
    aligned = alignment.apply_permutation(spec, weights_b, results['activations'][2])
    results['repair stats'] = timed(lambda: [
        alignment.layer_statistics(spec, scratch, w, images, FLAGS.batch_size)
        for w in (weights_a, aligned)], FLAGS.repeats)
    stats_a, stats_b = results['repair stats'][2]
    results['repair alpha'] = timed(
        lambda: alignment.repair(spec, scratch, weights_a, aligned, 0.5, images, stats_a,
                                 stats_b, batch_size=FLAGS.batch_size), FLAGS.repeats)
    params = sum(v.size for v in weights_a.values())
    print(f'{name}: {params} variables\' entries, {len(spec.groups)} permutation groups, '
          f'{FLAGS.examples} examples (target for each matching: under {target:.0f} s)')
    for method, (median, times, _) in results.items():
      print(f'  {method:13s} {median:7.2f} s  (runs: {", ".join(f"{t:.2f}" for t in times)})')
  print(f'load average after: {", ".join(f"{v:.1f}" for v in os.getloadavg())}')


if __name__ == '__main__':
  app.run(main)

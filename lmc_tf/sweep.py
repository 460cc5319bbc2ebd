r"""Runs a replicated sweep of IMP and instability analyses for one network config.

  python -m lmc_tf.sweep --gin_file=lenet_fashion_mnist.gin --gin_file=my_sweep.gin \
      --model_dir=runs/sweep [--dry_run] [--processes=2 --threads=1] \
      [--worker_index=0 --num_workers=4]

The sweep is the product of SweepConfig's init seeds, copy-seed pairs,
rewinding points, IMP levels and baselines (see lmc_tf/sweeps.py). Run it
again to resume; finished runs are never redone. --num_workers splits the
jobs over hosts (each host runs its --worker_index); --processes runs that
many workers as processes on this machine, each with --threads threads.
"""
import os
import subprocess
import sys

import lmc_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags
from absl import logging
import gin

from lmc_tf import cli
from lmc_tf import config as config_lib
from lmc_tf import sweeps
from lmc_tf.errors import UserError

flags.DEFINE_bool('dry_run', False, 'List the jobs, which are done, and who runs them.')
flags.DEFINE_integer('worker_index', 0, 'This worker\'s share of the jobs: index ...')
flags.DEFINE_integer('num_workers', 1, '... out of this many workers.')
flags.DEFINE_integer('processes', 1, 'Run this many workers as local processes.')

FLAGS = cli.FLAGS


def _spawn_processes():
  """Runs --processes copies of this command as workers; returns the worst exit status."""
  arguments = [a for a in sys.argv[1:] if not a.startswith(('--processes', '--worker_index',
                                                            '--num_workers'))]
  children = []
  for index in range(FLAGS.processes):
    log = open(os.path.join(FLAGS.model_dir, f'worker_{index}.log'), 'a')
    children.append(subprocess.Popen(
        [sys.executable, '-m', 'lmc_tf.sweep', *arguments, f'--worker_index={index}',
         f'--num_workers={FLAGS.processes}'], stdout=log, stderr=subprocess.STDOUT))
  logging.info('Started %d workers; logs in %s/worker_*.log', len(children), FLAGS.model_dir)
  return max(child.wait() for child in children)


def main(argv):
  hparams, options = cli.setup(argv, "the root directory of the sweep's runs")
  with gin.unlock_config():
    pruning = config_lib.PruningConfig()
    interp = config_lib.InterpolationConfig()
    sweep_config = config_lib.SweepConfig()
  if FLAGS.processes > 1 and not FLAGS.dry_run:
    if '://' in FLAGS.model_dir:
      raise UserError('--processes keeps local logs and file locks: use a local --model_dir, '
                      'or start one worker per host with --worker_index/--num_workers')
    os.makedirs(FLAGS.model_dir, exist_ok=True)
    status = _spawn_processes()
    if status:
      raise UserError(f'a worker failed (exit status {status}): see '
                      f'{FLAGS.model_dir}/worker_*.log')
    print(f'Sweep finished in {FLAGS.model_dir}')
    return
  data, strategy = cli.data_and_strategy(hparams)
  sweep = sweeps.Sweep(hparams, options, pruning, interp, sweep_config, FLAGS.model_dir, data,
                       strategy)
  jobs = sweep.run(FLAGS.worker_index, FLAGS.num_workers, FLAGS.dry_run)
  if not FLAGS.dry_run:
    print(f'Worker {FLAGS.worker_index}/{FLAGS.num_workers} finished its share of {len(jobs)} '
          f'jobs in {FLAGS.model_dir}')


if __name__ == '__main__':
  app.run(cli.run_main(main))

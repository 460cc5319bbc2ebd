r"""Wall time of one full instability analysis, split into training and evaluation.

  .venv/bin/python benchmarks/instability_analysis.py [--gin_file=lenet_fashion_mnist.gin] \
      [--rewind=0it] [--gin_bindings=...]

Runs the analysis (two copies trained from k, interpolation at 30 alphas on
the test and train sets, distances, Appendix C curves at every epoch) in a
fresh temporary directory and prints where the time went. The final copies'
evaluation and Appendix C's rows share the evaluation threads: their two lines
split the evaluation's wall time in proportion to the time each took in them.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lmc_tf  # pylint: disable=unused-import,g-import-not-at-top

from absl import app
from absl import flags
import gin

from lmc_tf import cli
from lmc_tf import config as config_lib
from lmc_tf import data as data_lib
from lmc_tf.analysis import instability

flags.DEFINE_string('rewind', '0it', 'Rewinding point k.')
FLAGS = flags.FLAGS


def main(_):
  files = FLAGS.gin_file or ['lenet_fashion_mnist.gin']
  cli.configure_devices()  # --threads
  hparams, options = cli.parse_gin(files, FLAGS.gin_bindings)
  with gin.unlock_config():
    interp = config_lib.InterpolationConfig()
  data = data_lib.load(hparams.dataset, FLAGS.data_dir, FLAGS.tfds_data_dir)
  with tempfile.TemporaryDirectory() as model_dir:
    began = time.time()
    spec = instability.make_spec(hparams, options, interp, data, FLAGS.rewind)
    metrics = instability.Analysis(spec, options, model_dir, data).run()
    total = time.time() - began
  wall = metrics['wall_time_s']
  final = wall['evaluate'] - wall['throughout_training']
  print(f'{" + ".join(files)}, k={FLAGS.rewind}, {interp.num_alphas} alphas, '
        f'{os.cpu_count()} CPUs')
  print(f'total                         {total:8.1f} s')
  print(f'training (2 copies)           {wall["train"]:8.1f} s  {100 * wall["train"] / total:5.1f}%')
  print(f'evaluation, all               {wall["evaluate"]:8.1f} s  '
        f'{100 * wall["evaluate"] / total:5.1f}%')
  print(f'  final copies, test+train    {final:8.1f} s  {100 * final / total:5.1f}%')
  print(f'  every epoch (Appendix C)    {wall["throughout_training"]:8.1f} s  '
        f'{100 * wall["throughout_training"] / total:5.1f}%')


if __name__ == '__main__':
  app.run(main)

r"""Instability analysis: is a network (or subnetwork) at iteration k stable to SGD noise?

  python -m lmc_tf.instability --gin_file=lenet_fashion_mnist.gin --model_dir=runs/lmc_k0 \
      --rewind=0it [--copies=2] [--data_order_seeds=1,2] \
      [--mask=runs/imp/level_15/mask.npz --baseline=imp|random_pruning|random_reinit]

Trains the copies from k under different data orders, interpolates between
them (InterpolationConfig in gin), and writes metrics.json and TensorBoard
summaries to --model_dir. See lmc_tf/analysis/instability.py for the layout.
"""
import os

import lmc_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags
import gin

from lmc_tf import cli
from lmc_tf import config as config_lib
from lmc_tf import io_utils
from lmc_tf import store
from lmc_tf.analysis import instability
from lmc_tf.errors import UserError
from lmc_tf.pruning import lottery

flags.DEFINE_string('rewind', '0it', 'The iteration k the copies are made at: "0it", "500it", '
                    '"5ep".')
flags.DEFINE_integer('copies', 2, 'Number of copies trained from k.')
flags.DEFINE_list('data_order_seeds', None, 'One data-order seed per copy (default: the '
                  "config's data_order_seed + 1, + 2, ...).")
flags.DEFINE_string('mask', None, 'A mask.npz (e.g. from an IMP level) applied to the copies.')
flags.DEFINE_string('parent', None, 'A run directory of the same config with a checkpoint at k '
                    '(e.g. an IMP run\'s level_00) to take the weights at k from, instead of '
                    'training MODEL_DIR/parent.')
flags.DEFINE_integer('level', None, 'The IMP level of --mask, which seeds the random '
                     'baselines (default: read from the hparams.json beside the mask).')
flags.DEFINE_enum('baseline', 'imp', ['imp', 'random_pruning', 'random_reinit'],
                  'imp: the mask on the weights at k; random_pruning: a random mask with its '
                  'per-layer counts; random_reinit: the mask on freshly drawn weights.')

FLAGS = cli.FLAGS


def main(argv):
  hparams, options = cli.setup(argv, 'name the directory for the analysis')
  with gin.unlock_config():
    interp = config_lib.InterpolationConfig()
    pruning = config_lib.PruningConfig()
  masks, level = None, FLAGS.level
  if FLAGS.mask:
    masks = io_utils.read_npz(FLAGS.mask)  # a missing or corrupt file is a UserError
    if level is None:
      level = lottery.level_of_mask(store.RunDir(os.path.dirname(FLAGS.mask)))
  try:
    seeds = None if FLAGS.data_order_seeds is None else [int(s) for s in FLAGS.data_order_seeds]
  except ValueError as e:
    raise UserError(f'--data_order_seeds must be integers, e.g. 1,2: {e}') from e
  if FLAGS.parent:
    instability.check_parent(FLAGS.parent)
  data, strategy = cli.data_and_strategy(hparams)
  spec = instability.make_spec(hparams, options, interp, data, FLAGS.rewind, FLAGS.copies, seeds,
                               FLAGS.baseline, pruning, level, has_mask=masks is not None)
  metrics = instability.Analysis(spec, options, FLAGS.model_dir, data, strategy, masks,
                                 FLAGS.parent).run()
  test, train = metrics['instability']['test'], metrics['instability']['train']
  print(f'Instability at k={FLAGS.rewind}: test error {test["error"]:.4f} (loss '
        f'{test["loss"]:.4f}), train error {train["error"]:.4f} (loss {train["loss"]:.4f}); '
        f'{"stable" if metrics["stable"] else "unstable"}. '
        f'Copies\' test errors {metrics["endpoints"]["test"]["error"]}. '
        f'TensorBoard: tensorboard --logdir {FLAGS.model_dir}')


if __name__ == '__main__':
  app.run(cli.run_main(main))

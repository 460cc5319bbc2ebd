r"""Instability modulo permutation, after the fact: align a finished analysis' copies.

  python -m lmc_tf.align --model_dir=ANALYSIS_DIR [--align=weights,activations] [--repair]

Reads the instability analysis in --model_dir (its hparams.json, its copies'
weights.npz and mask.npz; nothing is trained), aligns each copy B to copy A by
weight matching and/or activation matching, and writes aligned.json there: the
`aligned` metrics an analysis run with InterpolationConfig.align (and .repair)
writes into metrics.json, computed by the same function
(lmc_tf/analysis/instability.py, `compare_aligned`), and the same TensorBoard
summaries an aligned analysis writes (lmc_tf/summaries.py). Prints the test error
barrier raw, after each alignment and, with --repair, after REPAIR.
"""
import time

import lmc_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags

from lmc_tf import cli
from lmc_tf import config as config_lib
from lmc_tf import io_utils
from lmc_tf import store
from lmc_tf import summaries
from lmc_tf.analysis import instability
from lmc_tf.errors import UserError
from lmc_tf.training import trainer

ALIGNED = summaries.ALIGNED_JSON

flags.DEFINE_list('align', list(instability.ALIGN_METHODS), 'Alignment methods: weights '
                  '(weight matching), activations (activation matching).')
flags.DEFINE_bool('repair', False, 'Also the REPAIRed interpolation after each alignment.')
flags.DEFINE_bool('jit_compile', False, 'Evaluate XLA-compiled: for an analysis run with '
                  'RunOptions.jit_compile = True, whose numbers it then equals to the last bit.')

FLAGS = cli.FLAGS


def barrier_table(raw, aligned):
  """One line: the test error barrier raw, and after each alignment (and its REPAIR)."""
  cells = [f'raw {raw["instability"]["test"]["error"]:.4f}']
  for method, result in aligned.items():
    cells.append(f'{method}-matched {result["instability"]["test"]["error"]:.4f}')
    if 'repaired' in result:
      cells.append(f'{method}+REPAIR {result["repaired"]["instability"]["test"]["error"]:.4f}')
  return 'test error barrier: ' + ' / '.join(cells)


def write(run_dir, result):
  """aligned.json, and its TensorBoard summaries beside the analysis' own (replacing those
  of an earlier lmc_tf.align there)."""
  io_utils.write_json(run_dir.file(ALIGNED), result)
  summaries.write_aligned(run_dir.path, run_dir.metrics(), result,
                          run_dir.lineage()['rewind_iteration'])


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}: pass everything as --flags')
  if not FLAGS.model_dir:
    raise UserError('--model_dir is required: give the directory of a finished instability '
                    'analysis')
  if not FLAGS.align or any(m not in instability.ALIGN_METHODS for m in FLAGS.align):
    raise UserError(f'--align={",".join(FLAGS.align)}: give weights, activations or both, '
                    'comma-separated')
  run_dir = store.RunDir(FLAGS.model_dir)
  if not run_dir.exists(store.HPARAMS):
    raise UserError(f'{run_dir} holds no run: give the directory of a finished instability '
                    'analysis')
  hparams = config_lib.Hparams.from_dict(run_dir.read_json(store.HPARAMS))
  trainer.set_determinism(config_lib.RunOptions())
  data, strategy = cli.data_and_strategy(hparams)
  began = time.time()
  result = instability.align_finished(run_dir, data, FLAGS.align, FLAGS.repair, strategy,
                                      FLAGS.jit_compile)
  result['wall_time_s'] = time.time() - began
  write(run_dir, result)
  print(f'{barrier_table(run_dir.metrics(), result["aligned"])} '
        f'({result["wall_time_s"]:.1f} s; {run_dir.file(ALIGNED)})')


if __name__ == '__main__':
  app.run(cli.run_main(main))

r"""Prints a Markdown table of instability analyses.

  python -m lmc_tf.tables runs/lmc_dense_k0 runs/lmc_dense_k500 ...
"""
import os
import sys

import lmc_tf  # pylint: disable=unused-import

from lmc_tf import io_utils

COLUMNS = ('analysis', 'k', 'density', 'test err (copies)', 'test instability',
           'train instability', 'stable', 'L2', 'cosine', 'class. diffs test/train',
           'loss L2 test/train')


def row(directory):
  metrics = io_utils.read_json(os.path.join(directory, 'metrics.json'))
  settings = io_utils.read_json(os.path.join(directory, 'hparams.json'))['lineage']
  mask_path = os.path.join(directory, 'copy_0', 'mask.npz')
  density = 1.0
  if settings['mask_sha256'] and os.path.exists(mask_path):
    masks = io_utils.read_npz(mask_path)
    density = sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values())
  distances = metrics['distances']
  errors = metrics['endpoints']['test']['error']
  return [os.path.basename(directory.rstrip('/')), f"{settings['rewind_iteration']}",
          f'{100 * density:.1f}%',
          ' / '.join(f'{100 * e:.2f}%' for e in errors),
          f"{100 * metrics['instability']['test']['error']:.2f}%",
          f"{100 * metrics['instability']['train']['error']:.2f}%",
          'yes' if metrics['stable'] else 'no',
          f"{distances['l2']:.2f}", f"{distances['cosine']:.4f}",
          f"{distances['classification_differences']['test']} / "
          f"{distances['classification_differences']['train']}",
          f"{distances['loss_l2']['test']:.1f} / {distances['loss_l2']['train']:.1f}"]


def main(directories):
  print('| ' + ' | '.join(COLUMNS) + ' |')
  print('|' + '---|' * len(COLUMNS))
  for directory in directories:
    print('| ' + ' | '.join(row(directory)) + ' |')


if __name__ == '__main__':
  main(sys.argv[1:])

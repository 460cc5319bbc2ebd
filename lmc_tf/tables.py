r"""Prints Markdown tables of instability analyses or of an IMP run.

  python -m lmc_tf.tables runs/lmc_dense_k0 runs/lmc_dense_k500 ...   # analyses (and, where
                                                                      # aligned, their barriers)
  python -m lmc_tf.tables runs/imp_lenet_fmnist                       # IMP levels, baselines
"""
import sys

import lmc_tf  # pylint: disable=unused-import

from lmc_tf import store
from lmc_tf import summaries

COLUMNS = ('analysis', 'k', 'density', 'test err (copies)', 'test instability',
           'train instability', 'stable', 'L2', 'cosine', 'class. diffs test/train',
           'loss L2 test/train')


def markdown_table(header, rows):
  """A Markdown table of string cells: the header, its rule, then a line per row."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(cells) + ' |' for cells in rows]
  return '\n'.join(lines)


def analysis_density(run_dir):
  """The fraction of weights an analysis' copies keep (its mask's; 1 without one)."""
  copy = run_dir.copy(0)
  if not run_dir.lineage().get('mask_sha256') or not copy.exists(store.MASK):
    return 1.0
  return summaries.mask_density(copy.read_arrays(store.MASK))


def analysis_aligned(run_dir, metrics):
  """An analysis' aligned results, method -> result: metrics.json's `aligned`, and what
  `python -m lmc_tf.align` wrote in aligned.json (later, so its methods win); {} without."""
  aligned = dict(metrics.get('aligned') or {})
  if run_dir.exists(summaries.ALIGNED_JSON):
    aligned.update(run_dir.read_json(summaries.ALIGNED_JSON)['aligned'])
  return aligned


def row(directory):
  run_dir = store.RunDir(directory)
  metrics = run_dir.metrics()
  density = analysis_density(run_dir)
  distances = metrics['distances']
  errors = metrics['endpoints']['test']['error']
  return [run_dir.name, f"{run_dir.lineage()['rewind_iteration']}",
          f'{100 * density:.1f}%',
          ' / '.join(f'{100 * e:.2f}%' for e in errors),
          f"{100 * metrics['instability']['test']['error']:.2f}%",
          f"{100 * metrics['instability']['train']['error']:.2f}%",
          'yes' if metrics['stable'] else 'no',
          f"{distances['l2']:.2f}", f"{distances['cosine']:.4f}",
          f"{distances['classification_differences']['test']} / "
          f"{distances['classification_differences']['train']}",
          f"{distances['loss_l2']['test']:.1f} / {distances['loss_l2']['train']:.1f}"]


ALIGNED_VARIANTS = (('weight-matched', 'weights', False), ('+ REPAIR', 'weights', True),
                    ('activation-matched', 'activations', False),
                    ('+ REPAIR', 'activations', True))


def aligned_row(directory):
  """An analysis' test (train) error barriers raw and after each alignment, and its L2
  distances raw / weight-matched / activation-matched; None without alignment."""
  run_dir = store.RunDir(directory)
  metrics = run_dir.metrics()
  aligned = analysis_aligned(run_dir, metrics)
  if not aligned:
    return None
  barrier = lambda r: (f"{100 * r['instability']['test']['error']:.2f}% "
                       f"({100 * r['instability']['train']['error']:.2f}%)")
  cells = [run_dir.name, f"{run_dir.lineage()['rewind_iteration']}",
           f'{100 * analysis_density(run_dir):.1f}%', barrier(metrics)]
  for _, method, repaired in ALIGNED_VARIANTS:
    result = aligned.get(method, {})
    result = result.get('repaired') if repaired else result
    cells.append(barrier(result) if result else '')
  l2 = [metrics['distances']['l2']] + [aligned[m]['distances']['l2'] if m in aligned else None
                                      for m in ('weights', 'activations')]
  return cells + [' / '.join('' if d is None else f'{d:.2f}' for d in l2)]


def imp_table(directory):
  """Test accuracy against density for IMP and its baselines, one row per level."""
  summary = store.RunDir(directory).read_json(store.LOTTERY)
  baselines = [b for b in ('imp', 'random_pruning', 'random_reinit') if b in summary]
  header = ['level', 'density'] + [f'{b.replace("_", " ")} test accuracy' for b in baselines]
  rows = []
  for level in sorted(summary['imp'], key=int):
    cells = [level, f"{100 * summary['imp'][level]['density']:.1f}%"]
    for baseline in baselines:
      row = summary[baseline].get(level)
      cells.append(f"{100 * (1 - row['test_error']):.2f}%" if row else '')
    rows.append(cells)
  print(markdown_table(header, rows))


def main(directories):
  if len(directories) == 1 and store.RunDir(directories[0]).exists(store.LOTTERY):
    imp_table(directories[0])
    return
  print(markdown_table(COLUMNS, [row(directory) for directory in directories]))
  aligned = [r for r in map(aligned_row, directories) if r]
  if aligned:
    print('\nTest error barriers (train in brackets), raw and after aligning copy B to A:\n')
    print(markdown_table(['analysis', 'k', 'density', 'raw'] +
                         [label for label, _, _ in ALIGNED_VARIANTS] +
                         ['L2 raw / weights / activations'], aligned))


if __name__ == '__main__':
  main(sys.argv[1:])

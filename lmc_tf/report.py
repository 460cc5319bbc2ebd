r"""The appendix report of a sweep: figures with mean and std over replicates, and tables.

  python -m lmc_tf.report --model_dir=runs/sweep [--output_dir=runs/sweep/report]

Reads every sweep_*.json plan under --model_dir and whatever of its runs are
finished, then writes PNG figures (the appendix's figure types; where analyses
were aligned, by InterpolationConfig.align or lmc_tf.align, the error barrier
before and after alignment against k and against density), summary.md and
summary.csv to --output_dir, a TensorBoard hparams dashboard over the
analyses to MODEL_DIR/hparams, and the sweep's lines against k and density to
MODEL_DIR/tensorboard (`tensorboard --logdir MODEL_DIR/tensorboard`).
"""
import collections
import csv
import os

import lmc_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from lmc_tf import cli
from lmc_tf import io_utils
from lmc_tf import plots
from lmc_tf import store
from lmc_tf import summaries
from lmc_tf import tables
from lmc_tf.errors import UserError

flags.DEFINE_string('output_dir', None, 'Where the figures and tables go (default: '
                    'MODEL_DIR/report).')
FLAGS = flags.FLAGS

BASELINE_COLORS = {'imp': 'tab:blue', 'random_pruning': 'tab:orange',
                   'random_reinit': 'tab:green'}


def load(root):
  """(analyses, lottery rows) of the finished runs of every sweep under `root`.

  An analysis row: init_seed, rewind_iteration, level, baseline, copy_seeds, density, metrics.
  A lottery row: init_seed, rewind_iteration, level, baseline, density, test_error.
  """
  plans = store.sweep_plans(root)
  if not plans:
    raise UserError(f'no sweep_*.json in {root}: run lmc_tf.sweep with --model_dir={root} first')
  analyses, lotteries, seen = [], [], set()
  for plan in plans:
    for job in io_utils.read_json(plan)['jobs']:
      if 'rewind' in job:  # a plan written before Job.rewind was named rewind_iteration
        job['rewind_iteration'] = job.pop('rewind')
      directory = store.RunDir(os.path.join(root, job['directory']))
      if directory.path in seen:
        continue
      seen.add(directory.path)
      if job['kind'] == 'analysis':
        if not directory.finished():
          continue
        metrics = directory.metrics()
        aligned = tables.analysis_aligned(directory, metrics)
        if aligned:  # aligned.json too, so that the report reads metrics['aligned'] only
          metrics['aligned'] = aligned
        analyses.append(dict(job, density=tables.analysis_density(directory), metrics=metrics))
      else:
        if not directory.exists(store.LOTTERY):
          continue
        for baseline, levels in directory.read_json(store.LOTTERY).items():
          for level, row in levels.items():
            lotteries.append({'init_seed': job['init_seed'],
                              'rewind_iteration': job['rewind_iteration'], 'level': int(level),
                              'baseline': baseline, 'density': row['density'],
                              'test_error': row['test_error']})
  return analyses, _unique(lotteries)


def _unique(rows):
  keyed = {(r['init_seed'], r['rewind_iteration'], r['level'], r['baseline']): r for r in rows}
  return list(keyed.values())


def mean_std(values):
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _groups(analyses):
  """(level, baseline) -> rewinding iteration -> list of analysis rows."""
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for row in analyses:
    groups[(row['level'], row['baseline'])][row['rewind_iteration']].append(row)
  return groups


def _label(level, baseline, density):
  name = 'unpruned' if level == 0 else f'{100 * density:.1f}% weights'
  return name if baseline == 'imp' else f'{name}, {baseline.replace("_", " ")}'


def _value(metrics, path, scale=1.0):
  """The number at a dotted path of metrics.json (a list, e.g. the copies' errors: its mean);
  NaN where an older run lacks it."""
  for key in path.split('.'):
    if key not in metrics:
      return float('nan')
    metrics = metrics[key]
  return scale * float(np.mean(metrics))


def _k_axis(ax, ks):
  ks = sorted(set(ks))
  ax.set_xscale('symlog', linthresh=max(1, min([k for k in ks if k] or [1])))
  ax.set_xticks(ks)
  ax.set_xticklabels([str(k) for k in ks])
  ax.set_xlabel('rewinding iteration k')
  ax.grid(alpha=0.3)


def _density_axis(ax, percents):
  """Percent of weights remaining on a log axis, a tick per density, the sparsest right."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  ax.set_xscale('log')
  ax.set_xticks(sorted(percents))
  ax.xaxis.set_major_formatter(ticker.FormatStrFormatter('%.3g'))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.invert_xaxis()
  ax.set_xlabel('percent of weights remaining')
  ax.grid(alpha=0.3)


def _against_k(ax, groups, path, scale=1.0):
  """One line per (level, baseline): mean +- std over replicates of `path` against k."""
  for (level, baseline), by_k in sorted(groups.items()):
    ks = sorted(by_k)
    stats = [mean_std([_value(r['metrics'], path, scale) for r in by_k[k]]) for k in ks]
    density = by_k[ks[0]][0]['density']
    ax.errorbar(ks, [m for m, _ in stats], yerr=[s for _, s in stats], marker='o', capsize=3,
                label=_label(level, baseline, density),
                linestyle='-' if baseline == 'imp' else '--')
  _k_axis(ax, [k for by_k in groups.values() for k in by_k])


def figure_extreme_sparsity(lotteries, output_dir):
  """Appendix A / Figure 10: the best IMP accuracy over k per density, against the full network."""
  plt = plots.pyplot()
  # One value per init seed: level 0 is shared by every rewinding point.
  dense = list({r['init_seed']: 1 - r['test_error'] for r in lotteries
                if r['level'] == 0 and r['baseline'] == 'imp'}.values())
  if not dense:
    return None, None
  full_mean, full_std = mean_std(dense)
  by = collections.defaultdict(list)
  for r in lotteries:
    if r['level'] > 0:
      by[(r['baseline'], r['rewind_iteration'], r['level'])].append(r)
  levels = sorted({key[2] for key in by})
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  ax.axhline(100 * full_mean, color='black', label='unpruned (mean +- std)')
  ax.axhspan(100 * (full_mean - full_std), 100 * (full_mean + full_std), color='black', alpha=0.12)
  best, extreme = [], None
  for level in levels:
    candidates = [(mean_std([1 - r['test_error'] for r in rows]), rows[0]['density'])
                  for (baseline, _, lv), rows in by.items() if baseline == 'imp' and lv == level]
    if candidates:
      (acc, std), density = max(candidates, key=lambda c: c[0][0])
      best.append((density, acc, std))
      if acc >= full_mean - full_std:
        extreme = density if extreme is None else min(extreme, density)
  if best:
    ax.errorbar([100 * d for d, _, _ in best], [100 * a for _, a, _ in best],
                yerr=[100 * s for _, _, s in best], color='tab:red', marker='o', capsize=3,
                label='IMP, best k')
  for baseline, color in (('imp', 'tab:blue'), ('random_pruning', 'tab:orange'),
                          ('random_reinit', 'tab:green')):
    points = []
    for level in levels:
      rows = by.get((baseline, 0, level))
      if rows:
        acc, std = mean_std([1 - r['test_error'] for r in rows])
        points.append((rows[0]['density'], acc, std))
    if points:
      label = 'IMP, k=0' if baseline == 'imp' else f'{baseline.replace("_", " ")}, k=0'
      ax.errorbar([100 * d for d, _, _ in points], [100 * a for _, a, _ in points],
                  yerr=[100 * s for _, _, s in points], color=color, marker='.', capsize=2,
                  linestyle='--', label=label)
  _density_axis(ax, {100 * d for d, _, _ in best} | {100.0})
  ax.set_ylabel('test accuracy (%)')
  title = 'Extreme sparsity: ' + (f'{100 * extreme:.1f}% weights remaining' if extreme
                                  else 'no matching subnetwork')
  ax.set_title(title)
  ax.legend(fontsize=7)
  return plots.save_png(fig, os.path.join(output_dir, 'fig10_extreme_sparsity.png')), extreme


def _figure_against_k(groups, output_dir, name, panels, title):
  plt = plots.pyplot()
  columns = min(3, len(panels))
  rows = -(-len(panels) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False)
  for ax, (path, ylabel, scale) in zip(axes.flat, panels):
    _against_k(ax, groups, path, scale)
    ax.set_ylabel(ylabel)
  axes[0][0].legend(fontsize=7)
  fig.suptitle(title)
  return plots.save_png(fig, os.path.join(output_dir, name))


def _figure_per_split(groups, output_dir, name, xlabel, ylabel, series):
  """A panel per split (rows) and network (columns), a line per k: the mean +- std over
  replicates of `series(rows, split)`, which gives (x, values per replicate) or None."""
  plt = plots.pyplot()
  keys = sorted(groups)
  fig, axes = plt.subplots(2, len(keys), figsize=(4.6 * len(keys), 7), squeeze=False)
  for column, key in enumerate(keys):
    for row_index, split in enumerate(('test', 'train')):
      ax = axes[row_index][column]
      for k, rows in sorted(groups[key].items()):
        found = series(rows, split)
        if found is None:
          continue
        x, values = found
        ax.errorbar(x, values.mean(0), yerr=values.std(0, ddof=1) if len(values) > 1 else None,
                    label=f'k={k}', capsize=2)
      ax.set_title(f'{_label(key[0], key[1], groups[key][min(groups[key])][0]["density"])}: '
                   f'{split}', fontsize=9)
      ax.set_xlabel(xlabel)
      ax.set_ylabel(f'{split} {ylabel}')
      ax.legend(fontsize=7)
      ax.grid(alpha=0.3)
  return plots.save_png(fig, os.path.join(output_dir, name))


def figure_throughout_training(groups, output_dir):
  """Appendix C / Figure 14: test and train error instability at every epoch, a line per k."""
  def series(rows, split):
    key = f'{split}_error_instability'
    runs = [r['metrics'].get('throughout_training') or [] for r in rows]
    if not runs[0] or key not in runs[0][0]:  # Appendix C off, or a run from before train
      return None
    epochs = [row['epoch'] for row in runs[0]]
    return epochs, np.array([[100 * row[key] for row in run] for run in runs
                             if len(run) == len(epochs)])
  return _figure_per_split(groups, output_dir, 'fig14_instability_throughout_training.png',
                           'epoch', 'error instability (%)', series)


def figure_interpolation(groups, output_dir):
  """Appendix E / Figures 19-22: the full interpolation curves, a line per k."""
  def series(rows, split):
    return (rows[0]['metrics']['interpolation']['alphas'],
            np.array([[100 * e for e in r['metrics']['interpolation'][split]['error']]
                      for r in rows]))
  return _figure_per_split(groups, output_dir, 'fig19_interpolation_curves.png',
                           'interpolation alpha', 'error (%)', series)


# Instability modulo permutation (issue 14): metrics['aligned'][method], from the analysis
# or from lmc_tf.align's aligned.json (load).
MATCHED = {'weights': 'weight-matched', 'activations': 'activation-matched'}


def alignment_variants(analyses):
  """(label, metrics.json path prefix) of the raw barrier and of each alignment (and its
  REPAIR) that some analysis has; [] where none has any."""
  repaired = {}
  for row in analyses:
    for method, result in row['metrics'].get('aligned', {}).items():
      repaired[method] = repaired.get(method, False) or 'repaired' in result
  variants = [('raw', '')] if repaired else []
  for method in sorted(repaired, key=list(MATCHED).index):  # metrics.json sorts its keys
    label = MATCHED[method]
    variants.append((label, f'aligned.{method}.'))
    if repaired[method]:
      variants.append((f'{label} + REPAIR', f'aligned.{method}.repaired.'))
  return variants


def _alignment_panels(panels, output_dir, name, variants, axis, title):
  """A column per panel (its title, {x: analysis rows}), a row per split, a line per variant:
  the error barrier, mean +- std over replicates (NaN, not drawn, where one lacks it)."""
  plt = plots.pyplot()
  fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 7), squeeze=False)
  for column, (panel, by_x) in enumerate(panels):
    xs = sorted(by_x)
    for row_index, split in enumerate(('test', 'train')):
      ax = axes[row_index][column]
      for label, prefix in variants:
        stats = [mean_std([_value(r['metrics'], f'{prefix}instability.{split}.error', 100)
                           for r in by_x[x]]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker='o',
                    capsize=3, label=label, linestyle='--' if prefix else '-')
      axis(ax, xs)
      ax.set_title(f'{panel}: {split}', fontsize=9)
      ax.set_ylabel(f'{split} error barrier (%)')
      ax.legend(fontsize=7)
  fig.suptitle(title)
  return plots.save_png(fig, os.path.join(output_dir, name))


def figure_alignment_vs_k(groups, variants, output_dir):
  """The error barrier raw and after each alignment (and REPAIR) against k, a panel per
  network."""
  panels = [(_label(level, baseline, by_k[min(by_k)][0]['density']), by_k)
            for (level, baseline), by_k in sorted(groups.items())]
  return _alignment_panels(panels, output_dir, 'alignment_barrier_vs_k.png', variants, _k_axis,
                           'Error barrier before and after aligning the copies, against k')


def _against_density(analyses, x):
  """(k, baseline) -> x(row) -> analysis rows; the unpruned network in every baseline's."""
  lines = collections.defaultdict(lambda: collections.defaultdict(list))
  baselines = {row['baseline'] for row in analyses if row['level'] > 0} or {'imp'}
  for row in analyses:
    for baseline in (baselines if row['level'] == 0 else [row['baseline']]):
      lines[(row['rewind_iteration'], baseline)][x(row)].append(row)
  return lines


def _density(row):
  # To 6 significant digits, which drops float noise (a density kept in float32) but keeps
  # every IMP level apart, also at extreme sparsity (one level is 20% below the one before),
  # so that no level is averaged into another.
  return float(f"{row['density']:.6g}")


def _percent(row):
  return float(f"{100 * row['density']:.6g}")


def figure_alignment_vs_density(analyses, variants, output_dir):
  """The error barrier raw and after each alignment (and REPAIR) against density (percent of
  weights remaining), a panel per k and baseline."""
  panels = [(f'k={k}, {baseline.replace("_", " ")}', by_x) for (k, baseline), by_x in
            sorted(_against_density(analyses, _percent).items())]
  return _alignment_panels(panels, output_dir, 'alignment_barrier_vs_density.png', variants,
                           _density_axis,
                           'Error barrier before and after aligning the copies, against density')


def alignment_columns(variants):
  """The table's columns of the barriers, and L2 distances, after each alignment."""
  columns = []
  for label, prefix in variants[1:]:
    columns += [(f'{label} instability {split} error', f'{prefix}instability.{split}.error', 100)
                for split in ('test', 'train')]
    if not prefix.endswith('repaired.'):
      columns.append((f'{label} L2', f'{prefix}distances.l2', 1))
  return columns


SUMMARY_COLUMNS = [
    ('instability test error', 'instability.test.error', 100),
    ('instability train error', 'instability.train.error', 100),
    ('instability test loss', 'instability.test.loss', 1),
    ('error at k (test)', 'rewind.error_at_k.test', 100),
    ('masked error at k (test)', 'rewind.masked_error_at_k.test', 100),
    ('L2 init->k', 'rewind.l2_init_to_k', 1),
    ('L2 k->final', 'rewind.l2_k_to_final', 1),
    ('L2 final<->final', 'rewind.l2_final_to_final', 1),
    ('cosine distance', 'distances.cosine', 1),
    ('classified differently (test)', 'distances.classification_differences.test', 1),
    ('loss L2 (test)', 'distances.loss_l2.test', 1),
]


def write_tables(groups, extreme, output_dir, variants=()):
  columns = SUMMARY_COLUMNS + alignment_columns(variants)
  header = ['network', 'k', 'replicates', 'test error of copies (%)'] + [c[0] for c in columns]
  rows = []
  for (level, baseline), by_k in sorted(groups.items()):
    for k, items in sorted(by_k.items()):
      copy_errors = [100 * np.mean(r['metrics']['endpoints']['test']['error']) for r in items]
      cells = [_label(level, baseline, items[0]['density']), str(k), str(len(items)),
               '%.2f +- %.2f' % mean_std(copy_errors)]
      for _, path, scale in columns:
        mean, std = mean_std([_value(r['metrics'], path, scale) for r in items])
        cells.append(f'{mean:.4g} +- {std:.2g}')
      rows.append(cells)
  with tf.io.gfile.GFile(os.path.join(output_dir, 'summary.csv'), 'w') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  lines = ['# Instability analysis summary', '',
           'Mean +- standard deviation over replicates (init seeds x copy-seed pairs). '
           'Instabilities and errors in percent.', '']
  if extreme is not None:
    lines += [f'Extreme sparsity (Appendix A): **{100 * extreme:.1f}%** of weights remaining, '
              'the sparsest level where the best IMP subnetwork over k matches the unpruned '
              'network (mean - std).', '']
  if variants:
    lines += ["Instability modulo permutation: the barriers after aligning copy B's hidden "
              "units to copy A's by each matching (+ REPAIR: the interpolated networks "
              "REPAIRed), from metrics.json's `aligned` or lmc_tf.align's aligned.json; nan "
              'where a replicate has no such alignment.', '']
  lines.append(tables.markdown_table(header, rows))
  with tf.io.gfile.GFile(os.path.join(output_dir, 'summary.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


# The hparams dashboard's metrics and the sweep's lines against k and density:
# (tag suffix, metrics.json path, display name).
SWEEP_METRICS = [
    ('test_error_barrier', 'instability.test.error', 'test error barrier'),
    ('train_error_barrier', 'instability.train.error', 'train error barrier'),
    ('copies_test_error', 'endpoints.test.error', "copies' test error (mean)"),
    ('copies_train_error', 'endpoints.train.error', "copies' train error (mean)"),
    ('l2_distance', 'distances.l2', 'L2 distance between the copies'),
]


def _names(analyses):
  """A readable, unique name per analysis row (summaries.analysis_name; the directory's hash
  appended where two sweeps of different configs in one root give the same name)."""
  names, seen = [], set()
  for row in analyses:
    name = summaries.analysis_name(row['rewind_iteration'], row['density'], row['baseline'],
                                   row['init_seed'], row['copy_seeds'])
    if name in seen:
      name += '_' + os.path.basename(row['directory']).split('_')[-1]
    seen.add(name)
    names.append(name)
  return names


def _rewrite(directory):
  """Empties a directory the report owns, so that a second report does not add sessions."""
  if tf.io.gfile.exists(directory):
    tf.io.gfile.rmtree(directory)
  return directory


def write_hparams_dashboard(analyses, root):
  """TensorBoard's hparams dashboard in MODEL_DIR/hparams: one session per analysis, named as
  in MODEL_DIR/tensorboard, with the sweep's axes as hparams and the barriers as metrics."""
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  directory = _rewrite(os.path.join(root, 'hparams'))
  axes = {'k': 'rewind_iteration', 'density': 'density', 'baseline': 'baseline',
          'init_seed': 'init_seed', 'level': 'level'}
  values = lambda row: dict({axis: row[key] for axis, key in axes.items()},
                            density=round(row['density'], 4),
                            baseline='unpruned' if row['level'] == 0 else row['baseline'],
                            copy_seeds=','.join(map(str, row['copy_seeds'])))
  domains = collections.defaultdict(set)
  for row in analyses:
    for axis, value in values(row).items():
      domains[axis].add(value)
  with tf.summary.create_file_writer(directory).as_default():
    hp.hparams_config(
        hparams=[hp.HParam(axis, hp.Discrete(sorted(domain)),
                           display_name='k (rewinding iteration)' if axis == 'k' else None)
                 for axis, domain in domains.items()],
        metrics=[hp.Metric(f'hparams/{tag}', display_name=name) for tag, _, name in SWEEP_METRICS])
  for row, name in zip(analyses, _names(analyses)):
    with tf.summary.create_file_writer(os.path.join(directory, name)).as_default():
      hp.hparams(values(row), trial_id=name)
      for tag, path, _ in SWEEP_METRICS:
        tf.summary.scalar(f'hparams/{tag}', _value(row['metrics'], path),
                          step=row['rewind_iteration'])
  summaries.link_runs(root, {'hparams': directory})


def density_steps(analyses):
  """({density: TensorBoard step}, scale): step = round(scale * density), the scale 1000
  unless two of the densities would share a step (then 10000, ...)."""
  densities = sorted({_density(row) for row in analyses})
  steps, scale = summaries.alpha_steps(densities)
  return dict(zip(densities, steps)), scale


def write_tensorboard(analyses, root):
  """The sweep's view in MODEL_DIR/tensorboard: readable links to the analyses, and the mean
  over replicates of SWEEP_METRICS against k (a run per network: against_k/<network>) and
  against density (x = 1000 density, or 10000 density, ... where two of the sweep's densities
  would share a step; a run per k and baseline: against_density/k<k>_<baseline>, whose line
  starts at the unpruned network)."""
  summaries.link_runs(root, {name: os.path.join(root, row['directory']) for row, name in
                             zip(analyses, _names(analyses))})
  view = os.path.join(root, summaries.TENSORBOARD_DIR)
  summaries.write_sweep_layout(root)
  lines = collections.defaultdict(lambda: collections.defaultdict(list))  # run -> step -> rows
  for row in analyses:
    network = summaries.network_name(row['density'], row['baseline'])
    lines[f'against_k/{network}'][row['rewind_iteration']].append(row)
  step_of, density_scale = density_steps(analyses)
  for (k, baseline), by_step in _against_density(
      analyses, lambda row: step_of[_density(row)]).items():
    lines[f'against_density/k{k}_{baseline}'] = by_step
  for folder in ('against_k', 'against_density'):
    _rewrite(os.path.join(view, folder))
  for run, by_step in lines.items():
    writer = tf.summary.create_file_writer(os.path.join(view, run))
    x = 'k' if run.startswith('against_k') else f'{density_scale} x density'
    with writer.as_default():
      for tag, path, name in SWEEP_METRICS:
        for step in sorted(by_step):
          tf.summary.scalar(f'{run.split("/")[0]}/{tag}',
                            float(np.mean([_value(r['metrics'], path) for r in by_step[step]])),
                            step=step, description=f'{name}, the mean over replicates '
                            f'(step = {x}).')
    writer.flush()


def report(root, output_dir):
  """Writes every figure the finished runs allow; returns {'figures': [...], 'extreme_density'}."""
  analyses, lotteries = load(root)
  tf.io.gfile.makedirs(output_dir)
  figures = []
  fig10, extreme = figure_extreme_sparsity(lotteries, output_dir)
  if fig10:
    figures.append(fig10)
  groups = _groups(analyses)
  variants = alignment_variants(analyses)
  if groups:
    figures += [
        _figure_against_k(groups, output_dir, 'fig11_error_at_rewinding.png',
                          [('rewind.error_at_k.test', 'test error at k (%)', 100),
                           ('rewind.error_at_k.train', 'train error at k (%)', 100)],
                          'Error of the full network at the rewinding iteration (Appendix B)'),
        _figure_against_k(groups, output_dir, 'fig12_l2_distances.png',
                          [('rewind.l2_init_to_k', 'L2 distance init -> k', 1),
                           ('rewind.l2_k_to_final', 'L2 distance k -> final', 1),
                           ('rewind.l2_final_to_final', 'L2 distance final <-> final', 1)],
                          'L2 distances (Appendix B)'),
        figure_throughout_training(groups, output_dir),
        _figure_against_k(groups, output_dir, 'fig15_instability_and_error_vs_k.png',
                          [('instability.test.error', 'test error instability (%)', 100),
                           ('endpoints.test.error', 'test error of the copies (%)', 100)],
                          'Instability and test error against k at every density (Appendix D)'),
        figure_interpolation(groups, output_dir),
        _figure_against_k(groups, output_dir, 'fig23_train_vs_test_instability.png',
                          [('instability.test.error', 'test error instability (%)', 100),
                           ('instability.train.error', 'train error instability (%)', 100)],
                          'Train and test instability (Appendix F)'),
        _figure_against_k(groups, output_dir, 'fig24_train_vs_test_error.png',
                          [('endpoints.test.error', 'test error of the copies (%)', 100),
                           ('endpoints.train.error', 'train error of the copies (%)', 100)],
                          'Train and test error of the trained copies (Appendix F)'),
        _figure_against_k(groups, output_dir, 'fig25_distances_vs_k.png',
                          [('distances.l2', 'L2 distance', 1),
                           ('distances.cosine', 'cosine distance', 1),
                           ('distances.classification_differences.test',
                            'examples classified differently (test)', 1),
                           ('distances.loss_l2.test', 'L2 distance of losses (test)', 1),
                           ('distances.classification_differences.train',
                            'examples classified differently (train)', 1),
                           ('distances.loss_l2.train', 'L2 distance of losses (train)', 1)],
                          'Comparison functions between the copies (Appendix G)'),
    ]
    if variants:
      figures.append(figure_alignment_vs_k(groups, variants, output_dir))
      if len({_density(row) for row in analyses}) > 1:
        figures.append(figure_alignment_vs_density(analyses, variants, output_dir))
    write_hparams_dashboard(analyses, root)
    write_tensorboard(analyses, root)
  write_tables(groups, extreme, output_dir, variants)
  return {'figures': figures, 'extreme_density': extreme, 'analyses': len(analyses)}


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}: pass everything as --flags')
  if not FLAGS.model_dir:
    raise UserError('--model_dir is required: the root of a sweep')
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, 'report')
  result = report(FLAGS.model_dir, output_dir)
  print(f'{len(result["figures"])} figures from {result["analyses"]} analyses in {output_dir}')
  if result['extreme_density'] is not None:
    print(f'Extreme density: {100 * result["extreme_density"]:.1f}%')


if __name__ == '__main__':
  app.run(cli.run_main(main))

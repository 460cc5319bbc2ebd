"""TensorBoard summaries of analyses and sweeps, written so that TensorBoard draws them faithfully.

- Curves over alpha are scalar series whose step is alpha * 1000, rounded (alpha in
  thousandths; a finer scale, named in the tag's description, only where two alphas would
  share a step). Extrapolated alphas are included: alpha = -0.5 is step -500, which
  TensorBoard stores and draws like any other step. TensorBoard smooths every scalar
  chart (0.6 by default), which moves and flattens a curve's peak, and scales the y axis
  ignoring outliers, which can cut the peak off: each curve's description says to turn
  both off, and a Text summary holds the same numbers.
- The barriers, distances and Appendix B values are one point each, at step k.
- A Custom Scalars layout goes with every analysis and every sweep root: one dashboard per
  question (the barrier, the curves, Appendix C, the copies, the distances; across a sweep,
  the barrier against k and against density).
- Instability modulo permutation (metrics['aligned'], or aligned.json from lmc_tf.align):
  each method's curves, barriers and distances under the raw tags prefixed with
  aligned_<method>/ (aligned_<method>_repair/ after REPAIR), with the same steps, and
  charts that overlay them on the raw ones.
- A sweep's runs get readable names: MODEL_DIR/tensorboard/<name> links to its hashed
  directory (`tensorboard --logdir MODEL_DIR/tensorboard`).
"""
import os

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary

from lmc_tf import io_utils
from lmc_tf import plots
from lmc_tf import workers

SPLITS = ('test', 'train')
TENSORBOARD_DIR = 'tensorboard'  # a sweep's readable view, under its root
SMOOTHING = ('TensorBoard smooths scalar charts (0.6 by default), and its "Ignore outliers in '
             'chart scaling" (on by default) can cut a peak off: set smoothing to 0 and '
             'uncheck it to see the values as computed.')


def alpha_steps(alphas):
  """(steps, scale): each alpha as an integer step, round(alpha * scale); the scale is 1000
  unless two alphas would share a step (then 10000, ...)."""
  scale = 1000
  while len({round(scale * a) for a in alphas}) < len(set(alphas)):
    scale *= 10
  return [int(round(scale * a)) for a in alphas], scale


def _chart(title, *tags):
  return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=tags))


def _category(title, *charts):
  return layout_pb2.Category(title=title, chart=charts)


def _per_split(title, tag):
  """A chart per split: `tag` with {split} filled in (test and train in one chart would need
  a hover to tell apart)."""
  return [_chart(title.format(split=split), '^' + tag.format(split=split) + '$')
          for split in SPLITS]


ANALYSIS_LAYOUT = layout_pb2.Layout(category=[
    _category('Barrier: max over alpha minus the mean of the copies (one point at x = k)',
              *_per_split('{split} error barrier', r'instability/{split}_error'),
              *_per_split('{split} loss barrier', r'instability/{split}_loss')),
    _category('Interpolation curves (x = 1000 alpha; set smoothing to 0)',
              *_per_split('{split} error', r'interpolation/{split}_error'),
              *_per_split('{split} loss', r'interpolation/{split}_loss')),
    _category('Appendix C: barrier at every epoch (x = iteration)',
              *_per_split('{split} error barrier', r'throughout_training/{split}_error_instability'),
              *_per_split('{split} loss barrier', r'throughout_training/{split}_loss_instability')),
    _category('The copies during training (runs copy_0, copy_1, ...)',
              _chart('test error', r'^test/error$'),
              _chart('train loss', r'^train/loss$')),
    _category('Distances between the copies (Appendix G) and at k (Appendix B)',
              _chart('L2 distance', r'^distances/l2$'),
              _chart('cosine distance', r'^distances/cosine$'),
              *_per_split('examples classified differently ({split})',
                          r'distances/classification_differences_{split}'),
              *_per_split('L2 distance of per-example losses ({split})',
                          r'distances/loss_l2_{split}'),
              _chart('L2 distances init -> k -> final', r'^rewind/l2_'),
              *_per_split('error at k ({split})', r'rewind/(masked_)?error_at_k_{split}')),
])

# Instability modulo permutation, beside the raw charts: one chart per split draws the raw
# tag and every aligned_<method>[_repair]/ prefix of it.
ALIGNED_PREFIX = r'(aligned_\w+/)?'
ALIGNED_LAYOUT = layout_pb2.Layout(category=[
    _category('Alignment: barrier raw and after each alignment and REPAIR (one point at x = k)',
              *_per_split('{split} error barrier', ALIGNED_PREFIX + r'instability/{split}_error'),
              *_per_split('{split} loss barrier', ALIGNED_PREFIX + r'instability/{split}_loss')),
    _category('Alignment: curves raw and after each alignment and REPAIR (x = 1000 alpha)',
              *_per_split('{split} error', ALIGNED_PREFIX + r'interpolation/{split}_error'),
              *_per_split('{split} loss', ALIGNED_PREFIX + r'interpolation/{split}_loss')),
    _category('Alignment: distances between the copies raw and aligned',
              _chart('L2 distance', '^' + ALIGNED_PREFIX + r'distances/l2$'),
              _chart('cosine distance', '^' + ALIGNED_PREFIX + r'distances/cosine$')),
])
# What lmc_tf.align writes beside a finished analysis' metrics.json.
ALIGNED_JSON = 'aligned.json'
# lmc_tf.align's summaries go to an events file of their own, which its next run replaces:
# TensorBoard's Python reader (--load_fast=false, and other readers of event files) keeps
# every point of every file, so a second file would draw each aligned point twice.
ALIGNED_SUFFIX = '.aligned'


def analysis_layout(aligned):
  """An analysis' Custom Scalars layout: ANALYSIS_LAYOUT, and ALIGNED_LAYOUT's charts where
  it has aligned results."""
  if not aligned:
    return ANALYSIS_LAYOUT
  return layout_pb2.Layout(category=list(ANALYSIS_LAYOUT.category) +
                           list(ALIGNED_LAYOUT.category))


# The report's runs (against_k/<network>, against_density/<k and baseline>; report.py):
# the mean over replicates, a line per network or per k.
SWEEP_LAYOUT = layout_pb2.Layout(category=[
    _category('Sweep: against k (mean over replicates, a line per density and baseline)',
              *_per_split('{split} error barrier', r'against_k/{split}_error_barrier'),
              *_per_split("copies' {split} error", r'against_k/copies_{split}_error'),
              _chart('L2 distance between the copies', r'^against_k/l2_distance$')),
    _category('Sweep: against density (x = 1000 density, or 10000 density where two would '
              'share a step; a line per k and baseline)',
              *_per_split('{split} error barrier', r'against_density/{split}_error_barrier'),
              *_per_split("copies' {split} error", r'against_density/copies_{split}_error'),
              _chart('L2 distance between the copies', r'^against_density/l2_distance$')),
])


def write_layout(layout):
  """The Custom Scalars layout, into the default summary writer."""
  tf.summary.experimental.write_raw_pb(
      custom_scalar_summary.pb(layout).SerializeToString(), step=0)


def _markdown_table(header, rows):
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(map(str, row)) + ' |' for row in rows])


def _write_curves_and_barriers(prefix, source, network, values, steps, curve_note, k):
  """`values`' barriers (at step k) and curves over alpha (at `steps`) under tags prefixed
  with `prefix`; the descriptions say where they are (`source`) and what is interpolated."""
  for split in SPLITS:
    for key in ('error', 'loss'):
      tf.summary.scalar(f'{prefix}instability/{split}_{key}', values['instability'][split][key],
                        step=k, description=f'The {split} {key} barrier ({source}'
                        f'instability.{split}.{key}): max over alpha minus the mean of the '
                        'copies; one point at x = k.')
      for step, value in zip(steps, values['interpolation'][split][key]):
        tf.summary.scalar(f'{prefix}interpolation/{split}_{key}', value, step=step,
                          description=f'{split} {key} of {network}. ' + curve_note)


def _curve_steps(alphas):
  """(steps, the curves' description of their x axis) of the alphas."""
  steps, scale = alpha_steps(alphas)
  return steps, f'x = alpha * {scale} (step {steps[0]} is alpha {alphas[0]:g}). ' + SMOOTHING


def write_analysis(path, metrics, k):
  """An analysis' metrics.json as summaries in `path`, with its Custom Scalars layout."""
  alphas = metrics['interpolation']['alphas']
  steps, curve_note = _curve_steps(alphas)
  writer = io_utils.summary_writer(path)
  with writer.as_default():
    write_layout(analysis_layout(metrics.get('aligned')))
    _write_curves_and_barriers('', 'metrics.json ', '(1 - alpha) W1 + alpha W2', metrics, steps,
                               curve_note, k)
    for split in SPLITS:
      for key in ('error', 'loss'):
        for row in metrics.get('throughout_training') or []:
          tf.summary.scalar(f'throughout_training/{split}_{key}_instability',
                            row[f'{split}_{key}_instability'], step=int(row['iteration']),
                            description=f'Appendix C: the {split} {key} barrier between the '
                            "copies' checkpoints, x = iteration. " + SMOOTHING)
      tf.summary.scalar(f'distances/classification_differences_{split}',
                        metrics['distances']['classification_differences'][split], step=k)
      tf.summary.scalar(f'distances/loss_l2_{split}', metrics['distances']['loss_l2'][split],
                        step=k)
      for key in ('error_at_k', 'masked_error_at_k'):
        tf.summary.scalar(f'rewind/{key}_{split}', metrics['rewind'][key][split], step=k)
    for key in ('l2', 'cosine'):
      tf.summary.scalar(f'distances/{key}', metrics['distances'][key], step=k)
    for key in ('l2_init_to_k', 'l2_k_to_final', 'l2_final_to_final'):
      tf.summary.scalar(f'rewind/{key}', metrics['rewind'][key], step=k)
    tf.summary.text('summary/numbers', _numbers_table(metrics, k), step=k)
    curves = metrics['interpolation']
    tf.summary.text('interpolation/table', _markdown_table(
        ['alpha', 'step', 'test error', 'train error', 'test loss', 'train loss'],
        [[f'{a:g}', s] + [f'{curves[split][key][i]:.6g}' for key in ('error', 'loss')
                          for split in SPLITS] for i, (a, s) in enumerate(zip(alphas, steps))]),
                    step=k)
    if metrics.get('aligned'):
      _write_aligned(metrics, metrics['aligned'], steps, curve_note, k)
    tf.summary.image('interpolation/curves', plots.image_tensor(plots.curve_chart(
        alphas, {s: curves[s] for s in SPLITS},
        f'k={k}it: test instability {metrics["instability"]["test"]["error"]:.4f}')), step=k)
  writer.flush()


def _write_aligned(raw, aligned, steps, curve_note, k):
  """metrics['aligned'] (`aligned`: method -> result) under aligned_<method>/ and, REPAIRed,
  aligned_<method>_repair/, beside the raw tags; and a table of the barriers beside `raw`'s."""
  rows = [['raw'] + _aligned_cells(raw, raw['distances'])]
  for method, result in aligned.items():
    source = f'metrics.json or aligned.json aligned.{method}.'
    _write_curves_and_barriers(f'aligned_{method}/', source,
                               f'(1 - alpha) W1 + alpha P(W2), W2 aligned to W1 by {method} '
                               'matching', result, steps, curve_note, k)
    for key in ('l2', 'cosine'):
      tf.summary.scalar(f'aligned_{method}/distances/{key}', result['distances'][key], step=k,
                        description=f'{key} distance between W1 and W2 aligned to it by '
                        f'{method} matching ({source}distances.{key}); one point at x = k.')
    rows.append([f'{method}-matched'] + _aligned_cells(result, result['distances']))
    if 'repaired' in result:
      _write_curves_and_barriers(f'aligned_{method}_repair/', source + 'repaired.',
                                 f'the REPAIRed interpolation of W1 and W2 aligned to it by '
                                 f'{method} matching', result['repaired'], steps, curve_note, k)
      rows.append([f'{method}-matched + REPAIR'] + _aligned_cells(result['repaired'], {}))
  tf.summary.text('summary/aligned', _markdown_table(
      ['network', 'test error barrier', 'train error barrier', 'test loss barrier',
       'train loss barrier', 'L2 distance', 'cosine distance'], rows), step=k)


def _aligned_cells(result, distances):
  return ([f"{result['instability'][split][key]:.6g}" for key in ('error', 'loss')
           for split in SPLITS] +
          [f'{distances[key]:.6g}' if key in distances else '' for key in ('l2', 'cosine')])


def write_aligned(path, raw, aligned, k):
  """lmc_tf.align's aligned.json (`aligned`) as summaries of the analysis in `path` (whose
  metrics.json is `raw`), the single numbers at step k, with the layout that overlays them
  on the raw charts, in an events file that replaces the one an earlier lmc_tf.align there
  wrote (ALIGNED_SUFFIX)."""
  if not workers.is_chief():
    return
  for old in tf.io.gfile.glob(os.path.join(path, 'events.out.tfevents.*' + ALIGNED_SUFFIX)):
    tf.io.gfile.remove(old)
  steps, curve_note = _curve_steps(aligned['alphas'])
  writer = tf.summary.create_file_writer(path, filename_suffix=ALIGNED_SUFFIX)
  with writer.as_default():
    write_layout(analysis_layout(aligned['aligned']))
    _write_aligned(raw, aligned['aligned'], steps, curve_note, k)
  writer.close()


def _numbers_table(metrics, k):
  """The analysis' single numbers as a Markdown table: exact where a chart is one dot."""
  rows = [['k (iteration)', k], ['stable (test error barrier < threshold)', metrics['stable']]]
  for split in SPLITS:
    rows += [[f'{split} {key} barrier', f"{metrics['instability'][split][key]:.6g}"]
             for key in ('error', 'loss')]
    rows.append([f"{split} error of the copies",
                 ' / '.join(f'{e:.6g}' for e in metrics['endpoints'][split]['error'])])
  rows += [['L2 distance between the copies', f"{metrics['distances']['l2']:.6g}"],
           ['cosine distance', f"{metrics['distances']['cosine']:.6g}"]]
  for split in SPLITS:
    rows.append([f'examples classified differently ({split})',
                 metrics['distances']['classification_differences'][split]])
    rows.append([f'error at k ({split})', f"{metrics['rewind']['error_at_k'][split]:.6g}"])
  rows += [[f'L2 {key[3:].replace("_", " ")}', f"{metrics['rewind'][key]:.6g}"]
           for key in ('l2_init_to_k', 'l2_k_to_final', 'l2_final_to_final')]
  return _markdown_table(['quantity', 'value'], rows)


# A sweep's readable names.

def mask_density(masks):
  """The fraction of weights a mask keeps (tables and the report count density so too)."""
  return float(sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values()))


def network_name(density, baseline):
  """E.g. density3.9%_imp, density3.9%_random_pruning; the unpruned network: density100%."""
  return f'density{100 * density:.3g}%' + (f'_{baseline}' if density < 1 else '')


def analysis_name(k, density, baseline, init_seed, copy_seeds):
  """E.g. analysis_k500_density3.9%_imp_init0_copies1-2."""
  return (f'analysis_k{k}_{network_name(density, baseline)}_init{init_seed}_copies' +
          '-'.join(str(s) for s in copy_seeds))


def link_runs(root, links):
  """Links root/tensorboard/<name> to each directory of `links` ({name: directory}), so that
  TensorBoard's run list reads names instead of hashes. A name already linked elsewhere (two
  sweeps of different configs in one root) gets the directory's hash appended. Only on a
  local filesystem (elsewhere, e.g. gs://, `tensorboard --logdir_spec=name:dir,...`)."""
  if '://' in root or not workers.is_chief():
    return
  view = os.path.join(root, TENSORBOARD_DIR)
  os.makedirs(view, exist_ok=True)
  for name, directory in links.items():
    target = os.path.relpath(directory, view)
    link = os.path.join(view, name)
    if os.path.islink(link) and os.readlink(link) != target:
      link += '_' + os.path.basename(directory).split('_')[-1]
    if os.path.islink(link):
      continue
    temporary = f'{link}.{os.getpid()}.tmp'
    os.symlink(target, temporary)
    os.replace(temporary, link)  # atomic: a worker doing the same finds a whole link


def write_sweep_layout(root):
  """The sweep's Custom Scalars layout in root/tensorboard, once."""
  view = os.path.join(root, TENSORBOARD_DIR)
  if tf.io.gfile.glob(os.path.join(view, 'events.out.tfevents.*')):
    return
  writer = io_utils.summary_writer(view)
  with writer.as_default():
    write_layout(SWEEP_LAYOUT)
  writer.flush()

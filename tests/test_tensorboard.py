"""TensorBoard as researchers read it: a real TensorBoard server over a small analysis and a
small sweep, read through its HTTP data API (the data its dashboards draw); and instability
modulo permutation beside the raw numbers, in TensorBoard and in the report."""
import contextlib
import csv
import glob
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from conftest import analysis, lenet
from lmc_tf import align
from lmc_tf import config as config_lib
from lmc_tf import io_utils
from lmc_tf import plots
from lmc_tf import report
from lmc_tf import store
from lmc_tf import summaries
from lmc_tf import sweeps

SMALL = ["TrainingConfig.training_steps = '60it'", 'DatasetConfig.train_subset = 1200',
         'DatasetConfig.test_eval_examples = 500', 'DatasetConfig.train_eval_examples = 500']


def test_alpha_steps_are_alpha_in_thousandths_unless_two_would_collide():
  assert summaries.alpha_steps([-0.5, 0.0, 1 / 29, 1.0, 1.5]) == ([-500, 0, 34, 1000, 1500], 1000)
  assert summaries.alpha_steps([0.0, 0.0004, 0.001]) == ([0, 4, 10], 10000)


def test_density_steps_keep_extreme_sparsities_apart():
  # IMP levels 30 and 31 of 20% each (densities 0.124% and 0.099%) would share step 1 at
  # 1000 x density, and their replicates' means would be averaged into one point.
  rows = [{'density': d} for d in (1.0, 0.8 ** 24, 0.8 ** 29, 0.8 ** 30, 0.8 ** 31)]
  step_of, scale = report.density_steps(rows)
  assert len(set(step_of.values())) == 5 and scale == 10000
  # Float noise (a density kept in float32) is not a density of its own.
  rows = [{'density': 1.0}, {'density': 0.2}, {'density': float(np.float32(0.2))}]
  assert report.density_steps(rows) == ({0.2: 200, 1.0: 1000}, 1000)


def test_readable_names():
  assert (summaries.analysis_name(500, 0.0391, 'imp', 0, (1, 2)) ==
          'analysis_k500_density3.91%_imp_init0_copies1-2')
  assert (summaries.analysis_name(0, 1.0, 'imp', 1, (3, 4)) ==
          'analysis_k0_density100%_init1_copies3-4')


@pytest.fixture(scope='module')
def logdir(tmp_path_factory, fashion_mnist_splits):
  """A logdir of links to an analysis (extrapolated alphas, Appendix C) and to a sweep's
  readable view after its report: (logdir, the analysis' metrics, the sweep's analyses)."""
  tmp = tmp_path_factory.mktemp('tensorboard')
  hparams, options, data = lenet(fashion_mnist_splits, SMALL)
  interp = config_lib.InterpolationConfig(num_alphas=9, alpha_min=-0.5, alpha_max=1.5)
  metrics = analysis(hparams, options, interp, str(tmp / 'analysis'), data,
                     data_order_seeds=[1, 2]).run()
  root = str(tmp / 'sweep')
  sweep_config = config_lib.SweepConfig(rewind_points=('0it', '20it'), levels=(0, 1))
  sweeps.Sweep(hparams, options, config_lib.PruningConfig(),
               config_lib.InterpolationConfig(num_alphas=5, throughout_training=False),
               sweep_config, root, data).run()
  analyses, _ = report.load(root)
  report.write_hparams_dashboard(analyses, root)
  report.write_tensorboard(analyses, root)
  os.makedirs(tmp / 'logdir')
  os.symlink(tmp / 'analysis', tmp / 'logdir' / 'analysis')
  os.symlink(os.path.join(root, 'tensorboard'), tmp / 'logdir' / 'sweep')
  return str(tmp / 'logdir'), metrics, analyses


@contextlib.contextmanager
def _tensorboard(logdir, loaded, *flags):
  """A TensorBoard on loopback (port 0: a free one) over `logdir`, stopped at the end: a
  function that GETs (or POSTs JSON to) a path and returns the decoded JSON, once the
  runs it lists satisfy `loaded`."""
  process = subprocess.Popen(
      [sys.executable, '-m', 'tensorboard.main', f'--logdir={logdir}', '--host=127.0.0.1',
       '--port=0', '--reload_interval=1', *flags], stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  try:
    url = None
    for line in process.stdout:  # it prints "TensorBoard 2.x at http://127.0.0.1:PORT/"
      found = re.search(r'(http://127\.0\.0\.1:\d+)/', line)
      if found:
        url = found.group(1)
        break
    assert url, 'TensorBoard did not start'

    def get(path, body=None):
      request = urllib.request.Request(
          url + path, data=None if body is None else json.dumps(body).encode(),
          headers={'Content-Type': 'application/json', 'X-TensorBoard-Feature-Flags': '{}'})
      with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())

    # Loading is asynchronous: wait (bounded) until every run is there.
    deadline = time.time() + 120
    while time.time() < deadline:
      if loaded(get('/data/runs')):
        break
      time.sleep(1)
    time.sleep(2)  # the last runs' files are read after the run appears
    yield get
  finally:
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()


@pytest.fixture(scope='module')
def server(logdir):
  with _tensorboard(logdir[0], lambda runs: 'analysis' in runs and any(
      r.startswith('sweep/against_density/') for r in runs)) as get:
    yield get


def _scalars(get, run, tag):
  query = urllib.parse.urlencode({'run': run, 'tag': tag})
  return get(f'/data/plugin/scalars/scalars?{query}')  # [[wall time, step, value], ...]


@pytest.mark.slow
def test_runs_have_readable_names(server, logdir):
  runs = server('/data/runs')
  for run in ('analysis', 'analysis/copy_0', 'analysis/copy_1', 'sweep/train_init0',
              'sweep/imp_init0_k20/level_01', 'sweep/against_k/density100%'):
    assert run in runs
  names = sorted(r.split('/')[1] for r in runs if r.startswith('sweep/analysis_'))
  assert len(set(names)) == len(logdir[2]) == 4
  for name in names:
    assert re.fullmatch(r'analysis_k(0|20)_density(100%|[\d.]+%_imp)_init0_copies1-2', name)
  assert not [r for r in runs if re.search(r'(lmc|imp|train)_[0-9a-f]{16}', r)]


@pytest.mark.slow
def test_curves_have_alpha_on_the_x_axis(server, logdir):
  _, metrics, _ = logdir
  tags = server('/data/plugin/scalars/tags')['analysis']
  for split in ('test', 'train'):
    for key in ('error', 'loss'):
      assert 'smoothing' in tags[f'interpolation/{split}_{key}']['description']
      points = _scalars(server, 'analysis', f'interpolation/{split}_{key}')
      assert [p[1] for p in points] == [round(1000 * a) for a in metrics['interpolation']['alphas']]
      assert [p[2] for p in points] == pytest.approx(metrics['interpolation'][split][key],
                                                     rel=1e-6)
      barrier = _scalars(server, 'analysis', f'instability/{split}_{key}')
      assert [p[1] for p in barrier] == [0]
      assert barrier[0][2] == pytest.approx(metrics['instability'][split][key], abs=1e-6)
      appendix_c = _scalars(server, 'analysis', f'throughout_training/{split}_{key}_instability')
      assert [p[1] for p in appendix_c] == [r['iteration'] for r in metrics['throughout_training']]
  assert [p[1] for p in _scalars(server, 'analysis', 'interpolation/test_error')][:3] == [
      -500, -250, 0]  # extrapolated alphas are steps too
  texts = server('/data/plugin/text/tags')['analysis']
  assert 'summary/numbers' in texts and 'interpolation/table' in texts


@pytest.mark.slow
def test_custom_scalars_layout_draws_data(server):
  layout = server('/data/plugin/custom_scalars/layout')
  titles = [category['title'] for category in layout['category']]
  # Every analysis writes the same categories: TensorBoard merges them into one each.
  assert sorted(titles) == sorted(c.title for c in list(summaries.SWEEP_LAYOUT.category) +
                                  list(summaries.ANALYSIS_LAYOUT.category))
  runs = server('/data/runs')
  for category in layout['category']:
    for chart in category['chart']:
      for regex in chart['multiline']['tag']:
        drawn = False
        for run in runs:
          query = urllib.parse.urlencode({'run': run, 'tag': regex})
          found = server(f'/data/plugin/custom_scalars/scalars?{query}')
          drawn = drawn or any(found['tag_to_events'].values())
        assert drawn, f'nothing in {category["title"]}: {chart["title"]}'
  # Against k: a point per rewinding point, the mean over replicates.
  points = _scalars(server, 'sweep/against_k/density100%', 'against_k/test_error_barrier')
  assert [p[1] for p in points] == [0, 20]


@pytest.mark.slow
def test_hparams_dashboard_has_the_sweeps_axes_and_the_barriers(server, logdir):
  _, _, analyses = logdir
  experiment = server('/data/plugin/hparams/experiment', {'experimentName': ''})
  assert {'k', 'density', 'baseline', 'init_seed'} <= {h['name'] for h in
                                                        experiment['hparamInfos']}
  assert {m['name']['tag'] for m in experiment['metricInfos']} >= {
      'hparams/test_error_barrier', 'hparams/train_error_barrier'}
  groups = server('/data/plugin/hparams/session_groups', {
      'experimentName': '', 'allowedStatuses': ['STATUS_UNKNOWN'], 'colParams': [],
      'startIndex': 0, 'sliceSize': 100})['sessionGroups']
  assert len(groups) == len(analyses)
  barriers = sorted(row['metrics']['instability']['test']['error'] for row in analyses)
  shown = sorted(value['value'] for group in groups for value in group['metricValues']
                 if value['name']['tag'] == 'hparams/test_error_barrier')
  assert shown == pytest.approx(barriers, abs=1e-6)
  assert sorted(group['hparams']['k'] for group in groups) == [0, 0, 20, 20]


# Instability modulo permutation (issue 14), in TensorBoard and in the report: finished
# analyses written by hand (the summaries and the report read only their files), no training.
ALPHAS = [-0.5, 0.0, 0.5, 1.0, 1.5]
BUMP = [0.6, 0.0, 1.0, 0.0, 0.8]  # alpha 0 and 1 are the copies; the peak at alpha 0.5
SCALES = {'test': 1.0, 'train': 1.5}  # the train barrier 1.5 times the test barrier


def _comparison(barrier, l2):
  """What a comparison of two networks holds: curves whose test error barrier is `barrier`
  (train: 1.5 times it; loss: 4 times the error), the endpoints, L2 and cosine distances."""
  result = {'interpolation': {}, 'instability': {}, 'endpoints': {},
            'distances': {'l2': l2, 'cosine': l2 / 200}}
  for split, base in (('test', 0.1), ('train', 0.05)):
    error = [base + SCALES[split] * barrier * bump for bump in BUMP]
    result['interpolation'][split] = {'error': error, 'loss': [4 * e for e in error]}
    result['endpoints'][split] = {'error': [base, base], 'loss': [4 * base, 4 * base]}
    result['instability'][split] = {'error': SCALES[split] * barrier,
                                    'loss': 4 * SCALES[split] * barrier}
  return result


def _aligned(barriers, repaired=()):
  """metrics['aligned']: method -> comparison at (test error barrier, L2) of `barriers`;
  the methods in `repaired` also REPAIRed, at half their barrier."""
  out = {}
  for method, (barrier, l2) in barriers.items():
    out[method] = _comparison(barrier, l2)
    if method in repaired:
      out[method]['repaired'] = {key: value for key, value in _comparison(barrier / 2, l2).items()
                                 if key in ('interpolation', 'instability')}
  return out


def _metrics(barrier, l2, aligned_results=None):
  """An analysis' metrics.json (with `aligned` where given)."""
  out = _comparison(barrier, l2)
  out['interpolation']['alphas'] = ALPHAS
  out['stable'] = barrier < 0.02
  out['distances'].update(classification_differences={'test': 800, 'train': 2700},
                          loss_l2={'test': 130.5, 'train': 98.25})
  out['rewind'] = {'error_at_k': {'test': 0.9, 'train': 0.9},
                   'masked_error_at_k': {'test': 0.9, 'train': 0.9},
                   'l2_init_to_k': 0.0, 'l2_k_to_final': 78.0, 'l2_final_to_final': l2}
  out['copies'] = ['copy_0', 'copy_1']
  out['pairs'] = []
  if aligned_results:
    out['aligned'] = aligned_results
  return out


def _aligned_json(aligned_results):
  """What `python -m lmc_tf.align` writes in aligned.json."""
  repair = any('repaired' in result for result in aligned_results.values())
  return {'aligned': aligned_results, 'pairs': [], 'alphas': ALPHAS,
          'align': list(aligned_results), 'repair': repair, 'examples': 5000,
          'wall_time_s': 1.0}


def _write_analysis(path, k, analysis_metrics, density=1.0, posthoc=None):
  """A finished analysis of the network at k in `path`: hparams.json (its lineage),
  metrics.json, its summaries, a mask of `density` (below 1), and `posthoc` (aligned
  results) in aligned.json as lmc_tf.align leaves it (summaries included)."""
  run_dir = store.RunDir(path)
  os.makedirs(run_dir.copy(0).path)
  lineage = {'analysis': 'instability', 'rewind_iteration': k, 'mask_sha256': None}
  if density < 1:
    mask = {'fc/kernel': (np.arange(1000) < 1000 * density).astype(np.float32)}
    lineage['mask_sha256'] = io_utils.write_npz(run_dir.copy(0).file(store.MASK), mask)['sha256']
  run_dir.write_json(store.HPARAMS, {'lineage': lineage})
  summaries.write_analysis(run_dir.path, analysis_metrics, k)
  run_dir.write_results(analysis_metrics)
  if posthoc:
    _align_after(run_dir, posthoc)
  return run_dir


def _align_after(run_dir, results):
  """What lmc_tf.align leaves: aligned.json and its summaries (align.write)."""
  align.write(run_dir, _aligned_json(results))


def _write_sweep(root, analyses):
  """A sweep plan in `root` of analyses (job fields: directory, init_seed, rewind_iteration,
  level, baseline), whose directories are written already."""
  jobs = [dict(job, kind='analysis', copy_seeds=[1, 2]) for job in analyses]
  io_utils.write_json(os.path.join(root, 'sweep_0123456789abcdef.json'), {'jobs': jobs})


INLINE = _aligned({'weights': (0.015, 87.0), 'activations': (0.017, 96.0)},
                  repaired=('weights',))
POSTHOC_FIRST = _aligned({'weights': (0.02, 75.0), 'activations': (0.03, 85.0)},
                         repaired=('weights', 'activations'))
POSTHOC = _aligned({'weights': (0.01, 70.0)}, repaired=('weights',))
STEPS = [-500, 0, 500, 1000, 1500]


@pytest.fixture(scope='module')
def aligned_logdir(tmp_path_factory):
  """Runs `inline` (k=500: an analysis run with align, weights with REPAIR and activations),
  `posthoc` (k=20: lmc_tf.align run twice, the second with weights and REPAIR only) and
  `raw` (k=0: no alignment): (logdir, {run: (k, metrics, aligned results)})."""
  tmp = tmp_path_factory.mktemp('aligned_tensorboard')
  inline = _metrics(0.05, 90.0, INLINE)
  _write_analysis(str(tmp / 'inline'), 500, inline)
  posthoc = _metrics(0.04, 80.0)
  run_dir = _write_analysis(str(tmp / 'posthoc'), 20, posthoc, posthoc=POSTHOC_FIRST)
  _align_after(run_dir, POSTHOC)
  raw = _metrics(0.03, 60.0)
  _write_analysis(str(tmp / 'raw'), 0, raw)
  return str(tmp), {'inline': (500, inline, INLINE), 'posthoc': (20, posthoc, POSTHOC),
                    'raw': (0, raw, {})}


@pytest.fixture(scope='module')
def aligned_server(aligned_logdir):
  # TensorBoard's Python reader (--load_fast=false) keeps every point of every events file,
  # so a re-write that duplicated points would show here.
  with _tensorboard(aligned_logdir[0], lambda runs: {'inline', 'posthoc', 'raw'} <= set(runs),
                    '--load_fast=false') as get:
    yield get


def _curves_and_barrier(get, run, prefix, values, k):
  for split in ('test', 'train'):
    for key in ('error', 'loss'):
      points = _scalars(get, run, f'{prefix}interpolation/{split}_{key}')
      assert [p[1] for p in points] == STEPS
      assert [p[2] for p in points] == pytest.approx(values['interpolation'][split][key],
                                                     rel=1e-6)
      barrier = _scalars(get, run, f'{prefix}instability/{split}_{key}')
      assert [p[1] for p in barrier] == [k]
      assert barrier[0][2] == pytest.approx(values['instability'][split][key], rel=1e-6)


@pytest.mark.slow
def test_aligned_curves_barriers_and_distances_sit_beside_the_raw_ones(aligned_server,
                                                                        aligned_logdir):
  for run, (k, metrics, aligned) in aligned_logdir[1].items():
    tags = aligned_server('/data/plugin/scalars/tags')[run]
    _curves_and_barrier(aligned_server, run, '', metrics, k)
    expected = set()
    for method, result in aligned.items():
      _curves_and_barrier(aligned_server, run, f'aligned_{method}/', result, k)
      expected.add(f'aligned_{method}')
      for key in ('l2', 'cosine'):
        points = _scalars(aligned_server, run, f'aligned_{method}/distances/{key}')
        assert [p[1] for p in points] == [k]
        assert points[0][2] == pytest.approx(result['distances'][key], rel=1e-6)
      if 'repaired' in result:
        _curves_and_barrier(aligned_server, run, f'aligned_{method}_repair/',
                            result['repaired'], k)
        expected.add(f'aligned_{method}_repair')
    # Only what the run has: posthoc's second lmc_tf.align replaced the first's activations.
    assert {tag.split('/')[0] for tag in tags if tag.startswith('aligned_')} == expected
    texts = aligned_server('/data/plugin/text/tags')[run]
    assert ('summary/aligned' in texts) == bool(aligned)
  assert aligned_logdir[1]['raw'][2] == {}  # the run without alignment is checked too


def _layout_titles(events_file):
  """The category titles of the Custom Scalars layout an events file holds."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.custom_scalar import layout_pb2  # pylint: disable=g-import-not-at-top
  [layout] = [layout_pb2.Layout.FromString(tf.make_ndarray(value.tensor).item())
              for event in tf.compat.v1.train.summary_iterator(events_file)
              for value in event.summary.value if value.tag == 'custom_scalars__config__']
  return [category.title for category in layout.category]


def test_each_analysis_writes_the_layout_of_what_it_has(aligned_logdir):
  plain = [c.title for c in summaries.ANALYSIS_LAYOUT.category]
  aligned = plain + [c.title for c in summaries.ALIGNED_LAYOUT.category]
  for run, expected in (('inline', aligned), ('posthoc', plain), ('raw', plain)):
    [events] = glob.glob(os.path.join(aligned_logdir[0], run, 'events.out.tfevents.*.v2'))
    assert _layout_titles(events) == expected
  # lmc_tf.align's own file: the layout with the aligned charts, which TensorBoard takes as
  # the run's (the latest of its layouts).
  [events] = glob.glob(os.path.join(aligned_logdir[0], 'posthoc',
                                    'events.out.tfevents.*' + summaries.ALIGNED_SUFFIX))
  assert _layout_titles(events) == aligned
  assert summaries.analysis_layout({}) is summaries.ANALYSIS_LAYOUT


def test_rerunning_align_replaces_its_events_file(aligned_logdir):
  files = sorted(os.listdir(os.path.join(aligned_logdir[0], 'posthoc')))
  events = [f for f in files if f.startswith('events.out.tfevents.')]
  assert len(events) == 2  # the analysis' own, and the last lmc_tf.align's
  assert sum(f.endswith(summaries.ALIGNED_SUFFIX) for f in events) == 1


@pytest.mark.slow
def test_custom_scalars_overlay_raw_and_aligned_per_split(aligned_server, aligned_logdir):
  layout = aligned_server('/data/plugin/custom_scalars/layout')
  charts = {(category['title'], chart['title']): chart['multiline']['tag']
            for category in layout['category'] for chart in category['chart']}
  for category in summaries.ALIGNED_LAYOUT.category:
    for chart in category.chart:
      assert charts[(category.title, chart.title)] == list(chart.multiline.tag)
  # One chart per split draws the raw tag and every alignment's (and REPAIR's) beside it.
  _, metrics, aligned = aligned_logdir[1]['inline']
  networks = {'': metrics, 'aligned_weights/': aligned['weights'],
              'aligned_weights_repair/': aligned['weights']['repaired'],
              'aligned_activations/': aligned['activations']}
  barrier, curves = summaries.ALIGNED_LAYOUT.category[:2]
  for split in ('test', 'train'):
    for category, chart, kind in ((barrier, f'{split} error barrier', 'instability'),
                                  (curves, f'{split} error', 'interpolation')):
      [regex] = charts[(category.title, chart)]
      query = urllib.parse.urlencode({'run': 'inline', 'tag': regex})
      found = aligned_server(f'/data/plugin/custom_scalars/scalars?{query}')['tag_to_events']
      drawn = {tag: [event[2] for event in events] for tag, events in found.items()}
      assert sorted(drawn) == sorted(f'{prefix}{kind}/{split}_error' for prefix in networks)
      for prefix, values in networks.items():
        expected = values[kind][split]['error']
        assert drawn[f'{prefix}{kind}/{split}_error'] == pytest.approx(
            expected if kind == 'interpolation' else [expected], rel=1e-6)
  _, metrics, aligned = aligned_logdir[1]['posthoc']
  for regex in charts[(summaries.ALIGNED_LAYOUT.category[2].title, 'L2 distance')]:
    query = urllib.parse.urlencode({'run': 'posthoc', 'tag': regex})
    found = aligned_server(f'/data/plugin/custom_scalars/scalars?{query}')['tag_to_events']
    assert {t: events[0][2] for t, events in found.items()} == pytest.approx(
        {'distances/l2': metrics['distances']['l2'],
         'aligned_weights/distances/l2': aligned['weights']['distances']['l2']})


# The report's barrier before and after alignment against k and density, and its table.
# (directory, init seed, k, level, density, raw test error barrier, aligned in metrics.json,
# aligned in aligned.json): two replicates of the unpruned network at k = 0 and 500, one of a
# 20% subnetwork at each k, aligned in the analysis, after it, both (aligned.json wins), or
# not at all.
BOTH = ('weights', 'activations')
ANALYSES = [
    ('dense_k0_init0', 0, 0, 0, 1.0, 0.052,
     _aligned({'weights': (0.015, 87.0), 'activations': (0.017, 96.0)}, BOTH), None),
    ('dense_k0_init1', 1, 0, 0, 1.0, 0.048, None,
     _aligned({'weights': (0.013, 85.0), 'activations': (0.019, 95.0)}, BOTH)),
    ('dense_k500_init0', 0, 500, 0, 1.0, 0.006, None,
     _aligned({'weights': (0.005, 76.0), 'activations': (0.005, 86.0)}, BOTH)),
    ('dense_k500_init1', 1, 500, 0, 1.0, 0.004,
     _aligned({'weights': (0.9, 1.0)}),  # replaced by aligned.json's
     _aligned({'weights': (0.003, 75.0), 'activations': (0.004, 85.0)}, BOTH)),
    ('sparse_k0_init0', 0, 0, 1, 0.2, 0.001, _aligned({'weights': (0.001, 6.0)}), None),
    ('sparse_k500_init0', 0, 500, 1, 0.2, 0.002, None, None),
]
LABELS = ['raw', 'weight-matched', 'weight-matched + REPAIR', 'activation-matched',
          'activation-matched + REPAIR']
NAN = float('nan')


def _aligned_sweep(root, aligned=True):
  jobs = []
  for name, seed, k, level, density, barrier, inline, posthoc in ANALYSES:
    metrics = _metrics(barrier, 90.0 * density, inline if aligned else None)
    _write_analysis(os.path.join(root, name), k, metrics, density, posthoc if aligned else None)
    jobs.append({'directory': name, 'init_seed': seed, 'rewind_iteration': k, 'level': level,
                 'baseline': 'imp'})
  _write_sweep(root, jobs)
  return root


@pytest.fixture(scope='module')
def aligned_report(tmp_path_factory):
  """(root, the report's result, {figure file name: [per axes: {label: (x, y)}]})."""
  root = _aligned_sweep(str(tmp_path_factory.mktemp('aligned_sweep')))
  drawn = {}
  save_png = plots.save_png

  def capture(fig, path):  # the lines as drawn, before the figure is written and closed
    drawn[os.path.basename(path)] = [
        {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata()))
         for c in ax.containers} for ax in fig.axes]
    return save_png(fig, path)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(plots, 'save_png', capture)
    result = report.report(root, os.path.join(root, 'report'))
  return root, result, drawn


def _barriers(*test_barriers, split='test'):
  """Percent, as the figure draws them: the train barrier is 1.5 times the test one."""
  return pytest.approx([100 * SCALES[split] * b for b in test_barriers], nan_ok=True)


def test_load_reads_aligned_from_metrics_and_aligned_json(aligned_report):
  analyses, _ = report.load(aligned_report[0])
  by_name = {row['directory']: row['metrics'].get('aligned', {}) for row in analyses}
  assert sorted(by_name['dense_k0_init0']) == sorted(by_name['dense_k0_init1']) == sorted(BOTH)
  assert by_name['dense_k500_init1']['weights']['instability']['test']['error'] == 0.003
  assert by_name['sparse_k500_init0'] == {}
  assert [label for label, _ in report.alignment_variants(analyses)] == LABELS


def test_barrier_before_and_after_alignment_against_k(aligned_report):
  _, result, drawn = aligned_report
  assert 'alignment_barrier_vs_k.png' in [os.path.basename(p) for p in result['figures']]
  # Columns: unpruned, 20% weights; rows: test, train.
  unpruned_test, sparse_test, unpruned_train, _ = drawn['alignment_barrier_vs_k.png']
  assert list(unpruned_test) == LABELS
  assert unpruned_test['raw'] == ([0, 500], _barriers(0.05, 0.005))
  assert unpruned_test['weight-matched'][1] == _barriers(0.014, 0.004)
  assert unpruned_test['weight-matched + REPAIR'][1] == _barriers(0.007, 0.002)
  assert unpruned_test['activation-matched'][1] == _barriers(0.018, 0.0045)
  assert unpruned_test['activation-matched + REPAIR'][1] == _barriers(0.009, 0.00225)
  assert unpruned_train['weight-matched'][1] == _barriers(0.014, 0.004, split='train')
  # The subnetwork: aligned by weights at k=0 only; not drawn where it has no alignment.
  assert sparse_test['raw'][1] == _barriers(0.001, 0.002)
  assert sparse_test['weight-matched'][1] == _barriers(0.001, NAN)
  assert sparse_test['activation-matched'][1] == _barriers(NAN, NAN)


def test_barrier_before_and_after_alignment_against_density(aligned_report):
  _, result, drawn = aligned_report
  assert 'alignment_barrier_vs_density.png' in [os.path.basename(p) for p in result['figures']]
  k0_test, k500_test, k0_train, _ = drawn['alignment_barrier_vs_density.png']  # k=0, k=500
  assert k0_test['raw'] == ([20.0, 100.0], _barriers(0.001, 0.05))
  assert k0_test['weight-matched'][1] == _barriers(0.001, 0.014)
  assert k0_test['weight-matched + REPAIR'][1] == _barriers(NAN, 0.007)
  assert k500_test['activation-matched'][1] == _barriers(NAN, 0.0045)
  assert k0_train['raw'][1] == _barriers(0.001, 0.05, split='train')


def test_table_has_the_barrier_after_each_alignment(aligned_report):
  root = aligned_report[0]
  with open(os.path.join(root, 'report', 'summary.csv')) as f:
    header, *rows = list(csv.reader(f))
  assert header[-10:] == [
      'weight-matched instability test error', 'weight-matched instability train error',
      'weight-matched L2', 'weight-matched + REPAIR instability test error',
      'weight-matched + REPAIR instability train error',
      'activation-matched instability test error', 'activation-matched instability train error',
      'activation-matched L2', 'activation-matched + REPAIR instability test error',
      'activation-matched + REPAIR instability train error']
  cells = {(row[0], row[1]): dict(zip(header, row)) for row in rows}
  unpruned_k0 = cells[('unpruned', '0')]
  assert unpruned_k0['instability test error'] == '5 +- 0.28'
  assert unpruned_k0['weight-matched instability test error'] == '1.4 +- 0.14'
  assert unpruned_k0['weight-matched + REPAIR instability train error'] == '1.05 +- 0.11'
  assert unpruned_k0['activation-matched L2'] == '95.5 +- 0.71'
  assert cells[('20.0% weights', '500')]['weight-matched instability test error'] == 'nan +- 0'
  summary = open(os.path.join(root, 'report', 'summary.md')).read()
  assert 'Instability modulo permutation' in summary and '| 1.4 +- 0.14 |' in summary


def test_report_without_alignment_is_as_before(tmp_path):
  root = _aligned_sweep(str(tmp_path), aligned=False)
  analyses, _ = report.load(root)
  assert report.alignment_variants(analyses) == []
  report.write_tables(report._groups(analyses), None, root)  # pylint: disable=protected-access
  with open(os.path.join(root, 'summary.csv')) as f:
    header = next(csv.reader(f))
  assert header == ['network', 'k', 'replicates', 'test error of copies (%)'] + [
      c[0] for c in report.SUMMARY_COLUMNS]
  assert 'permutation' not in open(os.path.join(root, 'summary.md')).read()

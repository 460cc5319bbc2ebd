"""TensorBoard as researchers read it: a real TensorBoard server over a small analysis and a
small sweep, read through its HTTP data API (the data its dashboards draw)."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import analysis, lenet
from lmc_tf import config as config_lib
from lmc_tf import report
from lmc_tf import summaries
from lmc_tf import sweeps

SMALL = ["TrainingConfig.training_steps = '60it'", 'DatasetConfig.train_subset = 1200',
         'DatasetConfig.test_eval_examples = 500', 'DatasetConfig.train_eval_examples = 500']


def test_alpha_steps_are_alpha_in_thousandths_unless_two_would_collide():
  assert summaries.alpha_steps([-0.5, 0.0, 1 / 29, 1.0, 1.5]) == ([-500, 0, 34, 1000, 1500], 1000)
  assert summaries.alpha_steps([0.0, 0.0004, 0.001]) == ([0, 4, 10], 10000)


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


@pytest.fixture(scope='module')
def server(logdir):
  """A TensorBoard on loopback (port 0: a free one), stopped at the end: a function that
  GETs (or POSTs JSON to) a path and returns the decoded JSON."""
  process = subprocess.Popen(
      [sys.executable, '-m', 'tensorboard.main', f'--logdir={logdir[0]}', '--host=127.0.0.1',
       '--port=0', '--reload_interval=1'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
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
      runs = get('/data/runs')
      if 'analysis' in runs and any(r.startswith('sweep/against_density/') for r in runs):
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

"""Instability modulo permutation in the analysis (InterpolationConfig.align, .repair) and
after the fact (python -m lmc_tf.align)."""
import dataclasses
import json

import numpy as np
import pytest

from conftest import analysis, lenet, run_binary
from lmc_tf import config as config_lib
from lmc_tf import io_utils
from lmc_tf import store
from lmc_tf.analysis import instability
from lmc_tf.errors import UserError

BINDINGS = ["TrainingConfig.training_steps = '300it'", 'DatasetConfig.train_subset = 6000',
            'DatasetConfig.test_eval_examples = 2000', 'DatasetConfig.train_eval_examples = 2000']
METHODS = ('weights', 'activations')
INTERP = dict(num_alphas=5, throughout_training=False)


def _run(directory, fashion_mnist_splits, **interp):
  hparams, options, data = lenet(fashion_mnist_splits, BINDINGS)
  config = config_lib.InterpolationConfig(**INTERP, **interp)
  metrics = analysis(hparams, options, config, str(directory), data, rewind='0it',
                     data_order_seeds=[1, 2]).run()
  return metrics, data


@pytest.fixture(scope='module')
def analyses(tmp_path_factory, fashion_mnist_splits):
  """(directory, metrics with align and repair, metrics of the same analysis without, data)."""
  root = tmp_path_factory.mktemp('aligned')
  aligned, data = _run(root / 'aligned', fashion_mnist_splits, align=METHODS, repair=True)
  raw, _ = _run(root / 'raw', fashion_mnist_splits)
  return root / 'aligned', aligned, raw, data


def _without_times(tree):
  if isinstance(tree, dict):
    return {k: _without_times(v) for k, v in tree.items() if k != 'wall_time_s'}
  return tree


def test_aligned_metrics_have_every_key(analyses):
  _, metrics, _, _ = analyses
  assert sorted(metrics['aligned']) == sorted(METHODS)
  for method in METHODS:
    result = metrics['aligned'][method]
    for split in instability.SPLITS:
      for key in ('error', 'loss'):
        assert len(result['interpolation'][split][key]) == 5
        assert len(result['repaired']['interpolation'][split][key]) == 5
        assert np.isfinite(result['instability'][split][key])
        assert np.isfinite(result['repaired']['instability'][split][key])
        assert len(result['endpoints'][split][key]) == 2
    assert result['distances']['l2'] > 0 and 0 < result['distances']['cosine'] < 1
    assert set(result['wall_time_s']) == {'match', 'evaluate', 'repair'}


def test_alignment_leaves_the_raw_numbers_as_they_are(analyses):
  _, aligned, raw, _ = analyses
  assert 'aligned' not in raw
  strip = lambda m: {k: v for k, v in m.items() if k not in ('aligned', 'wall_time_s')}
  assert strip(aligned) == strip(raw)


def test_aligned_endpoints_are_the_copies(analyses):
  _, metrics, _, _ = analyses
  for method in METHODS:
    result = metrics['aligned'][method]
    for split in instability.SPLITS:
      raw_curve, curve = metrics['interpolation'][split], result['interpolation'][split]
      for index in (0, -1):  # alpha 0 and 1: A, and B aligned (the same function as B)
        assert curve['error'][index] == pytest.approx(raw_curve['error'][index], abs=1e-6)
        assert curve['loss'][index] == pytest.approx(raw_curve['loss'][index], rel=1e-5)
      np.testing.assert_allclose(result['endpoints'][split]['error'],
                                 metrics['endpoints'][split]['error'], atol=1e-6)
      # REPAIR at alpha 0 rescales A to its own statistics: A again.
      repaired = result['repaired']['interpolation'][split]
      assert repaired['error'][0] == pytest.approx(raw_curve['error'][0], abs=1e-6)
      assert repaired['loss'][0] == pytest.approx(raw_curve['loss'][0], rel=1e-4)


def test_weight_matching_never_moves_the_copies_apart(analyses):
  # Copies trained from one initialization share their units' identities: the identity is
  # often the best permutation already (as here), and never beaten by a worse one.
  _, metrics, _, _ = analyses
  assert metrics['aligned']['weights']['distances']['l2'] <= metrics['distances']['l2'] + 1e-9


def test_post_hoc_binary_gives_the_analysis_numbers(analyses):
  directory, metrics, _, _ = analyses
  result = run_binary('lmc_tf.align', f'--model_dir={directory}',
                      '--align=weights,activations', '--repair')
  assert result.returncode == 0, result.stderr
  assert 'test error barrier: raw' in result.stdout
  assert 'activations+REPAIR' in result.stdout
  written = io_utils.read_json(str(directory / 'aligned.json'))
  assert written['align'] == list(METHODS) and written['repair'] and written['examples'] == 2000
  expected = json.loads(json.dumps(_without_times(metrics['aligned'])))
  got = _without_times(written['aligned'])
  assert got.keys() == expected.keys()
  flat = lambda tree: config_lib._flatten(tree)  # pylint: disable=protected-access
  for key, value in flat(expected).items():
    np.testing.assert_allclose(flat(got)[key], value, atol=1e-7, err_msg=key)
  # metrics.json is left alone.
  assert store.RunDir(str(directory)).metrics() == metrics


def test_align_finished_refuses_what_it_cannot_align(tmp_path, analyses):
  directory, _, _, data = analyses
  with pytest.raises(UserError, match='no finished instability analysis'):
    instability.align_finished(str(tmp_path), data, METHODS, False)
  with pytest.raises(UserError, match='align'):
    instability.align_finished(str(directory), data, ['weight'], False)
  with pytest.raises(UserError, match='no alignment asked'):
    instability.align_finished(str(directory), data, [], False)


@pytest.mark.parametrize('fields, message', [
    (dict(align=('weight',)), 'give each of weights, activations at most once'),
    (dict(align=('weights', 'weights')), 'at most once'),
    (dict(align='weights'), 'must be a tuple'),
    (dict(repair=True), 'repair needs an alignment'),
])
def test_bad_alignment_config_is_refused(fields, message):
  with pytest.raises(UserError, match=message):
    instability.check_interpolation(config_lib.InterpolationConfig(**fields), 'lenet_300_100')


def test_alignment_of_a_model_without_a_permutation_spec_is_refused():
  interp = config_lib.InterpolationConfig(align=('weights',))
  with pytest.raises(UserError, match='no permutation spec for .inception_v3'):
    instability.check_interpolation(interp, 'inception_v3')
  instability.check_interpolation(dataclasses.replace(interp, align=()), 'inception_v3')


def test_defaults_leave_run_hashes_unchanged():
  described = store.describe(config_lib.InterpolationConfig())
  assert 'align' not in described and 'repair' not in described
  assert 'align' in store.describe(config_lib.InterpolationConfig(align=('weights',)))


def test_hparams_read_back_from_json(fashion_mnist_splits):
  hparams, _, _ = lenet(fashion_mnist_splits, BINDINGS + ["TrainingConfig.milestones = ('1ep',)"])
  assert config_lib.Hparams.from_dict(hparams.to_dict()) == hparams
  with pytest.raises(UserError, match='has no fields'):
    config_lib.config_from_dict(config_lib.ModelConfig, {'name': 'lenet_300_100', 'depth': 3})


def test_an_aligned_analysis_is_read_back_when_run_again(analyses, fashion_mnist_splits):
  directory, metrics, _, _ = analyses
  again, _ = _run(directory, fashion_mnist_splits, align=METHODS, repair=True)
  assert again == metrics

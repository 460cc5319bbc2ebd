"""The instability analysis: interpolation, barriers, distances, copies."""
import concurrent.futures
import dataclasses
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import analysis, lenet, parse
from lmc_tf import config as config_lib
from lmc_tf import data as data_lib
from lmc_tf import io_utils
from lmc_tf.analysis import distances, instability, interpolation
from lmc_tf.errors import UserError
from lmc_tf.models import masking
from lmc_tf.training import loop, trainer

BINDINGS = ["TrainingConfig.training_steps = '300it'", 'DatasetConfig.train_subset = 6000',
            'DatasetConfig.test_eval_examples = 2000', 'DatasetConfig.train_eval_examples = 2000']


def _setup(fashion_mnist_splits, bindings=()):
  return lenet(fashion_mnist_splits, BINDINGS + list(bindings))


def _analysis(tmp_path, name, fashion_mnist_splits, seeds, rewind='0it', masks=None, **interp):
  hparams, options, data = _setup(fashion_mnist_splits)
  config = config_lib.InterpolationConfig(**{'num_alphas': 7, **interp})
  metrics = analysis(hparams, options, config, str(tmp_path / name), data, rewind=rewind,
                     copies=len(seeds), data_order_seeds=seeds, masks=masks).run()
  return metrics, hparams, data


@pytest.fixture(scope='module')
def two_copies(tmp_path_factory, fashion_mnist_splits):
  tmp_path = tmp_path_factory.mktemp('instability')
  metrics, hparams, data = _analysis(tmp_path, 'k100', fashion_mnist_splits, [1, 2],
                                     rewind='100it')
  return tmp_path / 'k100', metrics, hparams, data


def test_metrics_have_every_key(two_copies):
  _, metrics, _, _ = two_copies
  assert len(metrics['interpolation']['alphas']) == 7
  for split in ('test', 'train'):
    for key in ('error', 'loss'):
      assert len(metrics['interpolation'][split][key]) == 7
      assert np.isfinite(metrics['instability'][split][key])
    assert metrics['distances']['classification_differences'][split] > 0
    assert metrics['distances']['loss_l2'][split] > 0
    assert 0 < metrics['rewind']['error_at_k'][split] < 0.9
  assert metrics['distances']['l2'] > 0 and 0 < metrics['distances']['cosine'] < 1
  for key in ('l2_init_to_k', 'l2_k_to_final', 'l2_final_to_final'):
    assert metrics['rewind'][key] > 0
  assert isinstance(metrics['stable'], bool)
  assert [row['iteration'] for row in metrics['throughout_training']] == [200, 300]
  # Appendix C on both sets; the train set's subset is stated.
  for row in metrics['throughout_training']:
    for split in ('test', 'train'):
      assert np.isfinite(row[f'{split}_error_instability'])
      assert np.isfinite(row[f'{split}_loss_instability'])
  assert metrics['throughout_training_examples'] == {'test': 2000, 'train': 2000}
  assert metrics['rewind']['masked_error_at_k'] == metrics['rewind']['error_at_k']


def test_appendix_c_uses_the_first_train_examples(fashion_mnist_splits):
  _, _, data = _setup(fashion_mnist_splits)
  view = data.with_eval_examples('train', 500)
  assert view.eval_count('train') == 500 and data.eval_count('train') == 2000
  assert view.eval_count('test') == 2000
  assert data.with_eval_examples('train', 10**6).eval_count('train') == 2000
  batches, count = view.eval_batches('train', 250)
  assert count == 500 and sum(int(w.numpy().sum()) for _, _, w in batches) == 500
  _, full_count = data.eval_batches('train', 250)
  assert full_count == 2000


def test_error_at_k_of_a_subnetwork_is_the_full_networks(two_copies, tmp_path,
                                                         fashion_mnist_splits):
  directory, _, hparams, data = two_copies
  at_k, _ = trainer.weights_at(str(directory / 'parent'), 100, hparams, data)
  rng = np.random.default_rng(0)
  masks = {p: (rng.random(m.shape) < 0.1).astype(np.float32)
           for p, m in masking.get_masks(trainer.build_model(hparams, data)).items()}
  options = parse('lenet_fashion_mnist.gin', bindings=BINDINGS)[1]
  interp = config_lib.InterpolationConfig(num_alphas=2, throughout_training=False)
  metrics = analysis(hparams, options, interp, str(tmp_path), data, rewind='100it',
                                 masks=masks, parent_dir=str(directory / 'parent')).run()
  model = trainer.build_model(hparams, data)
  evaluate = loop.Evaluator(model, tf.distribute.get_strategy()).evaluate
  trainer.assign_weights(model, at_k)
  full = evaluate(data, 'test')['error']
  trainer.assign_weights(model, {p: w * masks[p] if p in masks else w for p, w in at_k.items()})
  masked = evaluate(data, 'test')['error']
  assert metrics['rewind']['error_at_k']['test'] == pytest.approx(full, abs=1e-9)
  assert metrics['rewind']['masked_error_at_k']['test'] == pytest.approx(masked, abs=1e-9)
  assert masked > full + 0.05


def test_endpoints_reproduce_each_copys_own_error(two_copies):
  directory, metrics, _, _ = two_copies
  for index, alpha_index in ((0, 0), (1, -1)):
    own = io_utils.read_json(str(directory / f'copy_{index}' / 'metrics.json'))
    assert metrics['interpolation']['test']['error'][alpha_index] == pytest.approx(
        own['test_error'], abs=1e-12)
    assert metrics['endpoints']['test']['error'][index] == pytest.approx(own['test_error'],
                                                                         abs=1e-12)
    assert metrics['interpolation']['test']['loss'][alpha_index] == pytest.approx(
        own['test_loss'], rel=1e-5)


def test_same_seed_copies_are_identical_and_have_zero_instability(tmp_path, fashion_mnist_splits):
  metrics, _, _ = _analysis(tmp_path, 'same', fashion_mnist_splits, [3, 3],
                            throughout_training=False)
  a = io_utils.read_npz(str(tmp_path / 'same' / 'copy_0' / 'weights.npz'))
  b = io_utils.read_npz(str(tmp_path / 'same' / 'copy_1' / 'weights.npz'))
  assert all(np.array_equal(a[k], b[k]) for k in a)
  for split in ('test', 'train'):
    assert metrics['instability'][split]['error'] == pytest.approx(0.0, abs=1e-12)
    assert metrics['instability'][split]['loss'] == pytest.approx(0.0, abs=1e-5)
    assert metrics['distances']['classification_differences'][split] == 0
  assert metrics['distances']['l2'] == 0.0 and metrics['stable']


def test_different_seeds_give_different_copies(two_copies):
  directory = two_copies[0]
  a = io_utils.read_npz(str(directory / 'copy_0' / 'weights.npz'))
  b = io_utils.read_npz(str(directory / 'copy_1' / 'weights.npz'))
  assert not np.array_equal(a['fc1/kernel'], b['fc1/kernel'])
  # Both started from the parent's weights at k = 100.
  parent = directory / 'parent'
  assert (parent / 'checkpoints' / 'ckpt-100.index').exists()


@pytest.mark.parametrize('model_name', ['lenet_300_100', 'cifar_resnet_8'])
def test_batched_interpolation_equals_the_naive_one(model_name, fashion_mnist_splits):
  if model_name.startswith('lenet'):
    hparams, _, data = _setup(fashion_mnist_splits)
  else:
    hparams, _ = parse('resnet20_cifar10.gin', bindings=[
        f"ModelConfig.name = '{model_name}'", 'DatasetConfig.synthetic = True'])
    data = data_lib.load(hparams.dataset)
  weights = []
  for seed in (0, 1):
    model = trainer.build_model(dataclasses.replace(hparams, training=dataclasses.replace(
        hparams.training, init_seed=seed)), data)
    weights.append(trainer.weights_dict(model))
  # BatchNorm statistics that differ between the endpoints, so they are interpolated too.
  rng = np.random.default_rng(0)
  for path in weights[1]:
    if 'moving_mean' in path:
      weights[1][path] = rng.normal(size=weights[1][path].shape).astype(np.float32) * 0.1
  interpolator = interpolation.Interpolator(trainer.build_model(hparams, data))
  assert interpolator.split is not None  # both take the fast first-layer path
  alphas = [-0.2, 0.0, 0.3, 0.5, 1.0, 1.2]
  batched = interpolator.curve(weights[0], weights[1], alphas, data, 'test', method='batched')
  naive = interpolator.curve(weights[0], weights[1], alphas, data, 'test', method='naive')
  np.testing.assert_allclose(batched['error'], naive['error'], atol=1.5e-3)
  np.testing.assert_allclose(batched['loss'], naive['loss'], rtol=1e-4)


def test_distances_match_numpy():
  rng = np.random.default_rng(0)
  weights_a = {'a/kernel': rng.normal(size=(5, 4)), 'b/kernel': rng.normal(size=(3, 3, 2, 2)),
               'a/bias': rng.normal(size=4)}
  weights_b = {k: rng.normal(size=v.shape) for k, v in weights_a.items()}
  masks = {'a/kernel': (rng.random((5, 4)) < 0.5).astype(np.float32),
           'b/kernel': np.ones((3, 3, 2, 2), np.float32)}
  va = np.concatenate([(weights_a['a/kernel'] * masks['a/kernel']).ravel(), weights_a['b/kernel'].ravel()])
  vb = np.concatenate([(weights_b['a/kernel'] * masks['a/kernel']).ravel(), weights_b['b/kernel'].ravel()])
  a, b = distances.kernel_vector(weights_a, masks), distances.kernel_vector(weights_b, masks)
  np.testing.assert_array_equal(a, va)
  assert distances.l2_distance(a, b) == pytest.approx(np.sqrt(np.sum((va - vb) ** 2)))
  assert distances.cosine_distance(a, b) == pytest.approx(
      1 - va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))
  assert distances.cosine_distance(a, a) == pytest.approx(0.0, abs=1e-12)
  assert distances.classification_differences([1, 2, 3, 4], [1, 0, 3, 0]) == 2
  assert distances.loss_l2_distance([0.5, 1.0], [0.5, 3.0]) == pytest.approx(2.0)


def test_sparse_analysis_uses_the_mask(tmp_path, fashion_mnist_splits):
  hparams, _, data = _setup(fashion_mnist_splits)
  ones = masking.get_masks(trainer.build_model(hparams, data))
  rng = np.random.default_rng(0)
  masks = {p: (rng.random(m.shape) < 0.2).astype(np.float32) for p, m in ones.items()}
  metrics, _, _ = _analysis(tmp_path, 'sparse', fashion_mnist_splits, [1, 2], masks=masks,
                            throughout_training=False)
  for index in (0, 1):
    weights = io_utils.read_npz(str(tmp_path / 'sparse' / f'copy_{index}' / 'weights.npz'))
    assert not weights['fc1/kernel'][masks['fc1/kernel'] == 0].any()
  assert metrics['distances']['l2'] > 0


def test_bad_analysis_input(tmp_path, fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits)
  interp = config_lib.InterpolationConfig()
  with pytest.raises(UserError, match='not before the end of training'):
    analysis(hparams, options, interp, str(tmp_path), data, rewind='300it')
  with pytest.raises(UserError, match='at least 2 copies'):
    analysis(hparams, options, interp, str(tmp_path), data, copies=1)
  with pytest.raises(UserError, match='needs the --mask'):
    analysis(hparams, options, interp, str(tmp_path), data, baseline='random_reinit')
  with pytest.raises(UserError, match='throughout_num_alphas must be 0'):
    analysis(hparams, options, dataclasses.replace(interp, throughout_num_alphas=1),
             str(tmp_path), data)
  bad_mask = {'fc1/kernel': np.ones((3, 3), np.float32)}
  with pytest.raises(UserError, match='does not fit the model'):
    analysis(hparams, options, interp, str(tmp_path / 'bad'), data,
                         masks=bad_mask).run()



def test_recomputed_batch_norm_statistics_are_the_average_over_batches():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hparams, _ = parse('resnet20_cifar10.gin', bindings=[
      "ModelConfig.name = 'cifar_resnet_8'", 'DatasetConfig.synthetic = True'])
  data = data_lib.load(hparams.dataset)
  model = trainer.build_model(hparams, data)
  interpolator = interpolation.Interpolator(model)
  batches = list(data.train_batches(32, 0, 0, 3))
  interpolator.recompute_batch_norm(batches)
  layer = model.get_layer('bn')
  conv_output = tf.keras.Model(model.inputs, model.get_layer('conv').output)
  means = [tf.reduce_mean(conv_output(x), axis=[0, 1, 2]).numpy() for x, _ in batches]
  np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean(means, axis=0), atol=1e-5)
  assert layer.momentum == 0.9  # restored
  weights = trainer.weights_dict(model)
  curve = interpolator.curve(weights, weights, [0.0, 1.0], data, 'test', bn_data=batches)
  assert curve['error'][0] == curve['error'][1]



@pytest.mark.slow
def test_an_analysis_runs_on_a_gfile_filesystem(fashion_mnist_splits):
  """Every file goes through tf.io.gfile, so gs:// works; ram:// (no local path) stands in."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hparams, options, data = _setup(fashion_mnist_splits, [
      "TrainingConfig.training_steps = '60it'"])
  config = config_lib.InterpolationConfig(num_alphas=3)
  root = 'ram://lmc_tf_test/k20'
  metrics = analysis(hparams, options, config, root, data, rewind='20it').run()
  assert io_utils.read_json(root + '/metrics.json') == metrics
  for name in ('parent/checkpoints/ckpt-20.index', 'copy_1/weights.npz', 'hparams.json'):
    assert tf.io.gfile.exists(f'{root}/{name}'), name
  assert tf.io.gfile.glob(root + '/events.out.tfevents.*')
  # Run again: read back, not recomputed.
  again = analysis(hparams, options, config, root, data, rewind='20it').run()
  assert again == metrics

if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))


def test_parallel_copies_give_the_numbers_of_copies_one_after_the_other(tmp_path, monkeypatch,
                                                                        fashion_mnist_splits):
  """RunOptions.parallel_copies trains the copies, and evaluates the final copies, Appendix
  C's epochs and Appendix B's errors at k, in threads: the same weights and metrics (all but
  wall times), bit for bit, as one after the other."""
  pools = []

  class Pool(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, workers):
      pools.append(workers)
      super().__init__(workers)

  monkeypatch.setattr(trainer.concurrent.futures, 'ThreadPoolExecutor', Pool)
  hparams, options, data = _setup(fashion_mnist_splits)
  config = config_lib.InterpolationConfig(num_alphas=5, throughout_num_alphas=3)
  results = {}
  for parallel in (False, True):
    name = f'parallel_{parallel}'
    run_options = dataclasses.replace(options, parallel_copies=parallel)
    metrics = analysis(hparams, run_options, config, str(tmp_path / name), data,
                       data_order_seeds=[1, 2]).run()
    metrics.pop('wall_time_s')
    weights = [io_utils.read_npz(str(tmp_path / name / f'copy_{i}' / 'weights.npz'))
               for i in (0, 1)]
    results[parallel] = metrics, weights
  # The parallel run: the copies' training, the final copies with Appendix C, Appendix B.
  assert pools == [2, 2, 2]
  assert results[True][0] == results[False][0]
  for parallel_weights, sequential_weights in zip(results[True][1], results[False][1]):
    for path, value in sequential_weights.items():
      np.testing.assert_array_equal(parallel_weights[path], value, err_msg=path)


def test_the_first_error_in_a_thread_stops_the_others_at_their_next_chunk():
  """map_in_threads (the copies' training, Appendix C) raises a call's error without waiting
  for the other calls to end: a run training in another thread stops at its next chunk."""
  checks = []

  def work(item):
    if item == 'fails':
      raise ValueError('copy 0 failed')
    deadline = time.time() + 60
    while time.time() < deadline:  # a run between chunks of steps, as Run.train checks
      checks.append(item)
      trainer.check_not_stopped()
      time.sleep(0.01)
    return 'trained to the end'

  began = time.time()
  with pytest.raises(ValueError, match='copy 0 failed'):
    trainer.map_in_threads(work, ['fails', 'trains', 'trains'], 2)
  assert time.time() - began < 10
  assert 'trains' in checks  # it had begun, and stopped at a check
  assert trainer.map_in_threads(str.upper, ['a', 'b', 'c'], 2) == ['A', 'B', 'C']  # reset


def test_evaluations_shared_among_threads_keep_their_order_stop_on_an_error_and_apportion():
  """Analysis._in_threads (the final copies, Appendix C, Appendix B): results in the tasks'
  order whichever evaluator ran them; a failing task stops the other thread's at its next
  check; Appendix C's share of the wall time is apportioned by the time its tasks took."""
  evaluations = instability.Analysis.__new__(instability.Analysis)
  evaluations.evaluators = [('evaluator 0', None), ('evaluator 1', None)]
  evaluations.throughout_seconds = 0.0

  def task(seconds, value):
    def fn(evaluator, _):
      time.sleep(seconds)
      return value, evaluator
    return fn

  began = time.time()
  results = evaluations._in_threads([('final', task(0.3, 'a')), ('throughout', task(0.1, 'b')),
                                     ('throughout', task(0.1, 'c'))])
  wall = time.time() - began
  assert [value for value, _ in results] == ['a', 'b', 'c']
  assert {evaluator for _, evaluator in results} == {'evaluator 0', 'evaluator 1'}
  # 0.2 of the 0.5 busy seconds were Appendix C's.
  assert 0.3 < evaluations.throughout_seconds / wall < 0.5

  def fails(*_):
    raise ValueError('a curve failed')

  def evaluates(*_):
    for _ in range(6000):  # an evaluation between its splits, as the analysis' check
      trainer.check_not_stopped()
      time.sleep(0.01)
    return 'evaluated to the end'

  began = time.time()
  with pytest.raises(ValueError, match='a curve failed'):
    evaluations._in_threads([('final', evaluates), ('final', fails), ('final', evaluates)])
  assert time.time() - began < 10


@pytest.mark.parametrize('field', ['num_alphas', 'batch_norm_batches',
                                   'throughout_train_examples', 'throughout_num_alphas'])
def test_counts_of_the_interpolation_config_must_be_whole_numbers(field):
  interp = config_lib.InterpolationConfig(**{field: 2.5})
  with pytest.raises(UserError, match=f'InterpolationConfig.{field} must be a whole number'):
    instability.check_interpolation(interp)

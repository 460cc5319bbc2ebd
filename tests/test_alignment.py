"""lmc_tf.analysis.alignment: permutation specs, weight and activation matching, REPAIR."""
import itertools

import lmc_tf  # pylint: disable=unused-import  (must precede TensorFlow)

import numpy as np
import pytest
import tensorflow as tf

from lmc_tf import models
from lmc_tf.analysis import alignment
from lmc_tf.errors import UserError
from lmc_tf.models import masking
from lmc_tf.training import trainer

# name, input shape: VGG at 64x64 has 2x2 positions before its dense layer, so the
# flattened (h, w, c) permutation is exercised; ResNet-50 at 32x32 ends at 1x1.
NETWORKS = [
    ('lenet_300_100', (28, 28, 1)),
    ('cifar_resnet_8', (8, 8, 3)),
    ('cifar_resnet_20_8', (8, 8, 3)),
    ('cifar_vgg_11', (64, 64, 3)),
    pytest.param('resnet_50', (32, 32, 3), marks=pytest.mark.slow),
]


def _randomized(weights, seed):
  """`weights` with BatchNorm state and biases made non-trivial: gammas of both signs,
  moving means and variances away from 0 and 1, so that a permutation that missed
  any of them would show in the logits."""
  rng = np.random.default_rng(seed)
  result = {}
  for path, value in weights.items():
    kind = path.rsplit('/', 1)[-1]
    shape = value.shape
    if kind == 'gamma':
      value = rng.normal(0.8, 0.5, shape)
    elif kind == 'beta':
      value = rng.normal(0.1, 0.2, shape)
    elif kind == 'moving_mean':
      value = rng.normal(0.0, 0.3, shape)
    elif kind == 'moving_variance':
      value = rng.uniform(0.5, 2.0, shape)
    elif kind == 'bias':
      value = rng.normal(0.0, 0.1, shape)
    result[path] = np.asarray(value, np.float32)
  return result


def _random_masks(model, seed, density=0.5):
  rng = np.random.default_rng(seed)
  return {path: (rng.random(mask.shape) < density).astype(np.float32)
          for path, mask in masking.get_masks(model).items()}


def _masked_model(name, input_shape, num_classes=10, seed=0):
  return masking.wrap(models.build(name, input_shape, num_classes, seed))


def _logits(model, weights, masks, images):
  """The logits of `weights` pruned by `masks`: setting a mask zeroes its pruned weights, as
  in a masked run (the forward pass does not multiply by the mask)."""
  trainer.assign_weights(model, weights)
  masking.set_masks(model, masks)
  return model(images, training=False).numpy()


@pytest.mark.parametrize('name,input_shape', NETWORKS)
def test_permutation_preserves_function(name, input_shape):
  model = _masked_model(name, input_shape)
  spec = alignment.permutation_spec(name)
  weights = _randomized(trainer.weights_dict(model), seed=1)
  assert set(spec.axes) == set(weights)  # the spec covers every variable, and only those
  perms = alignment.random_permutation(spec, weights, seed=2)
  permuted = alignment.apply_permutation(spec, weights, perms)
  assert any(not np.array_equal(weights[p], permuted[p]) for p in weights)
  images = tf.random.stateless_normal((2,) + input_shape, seed=(3, 4))
  for masks in (None, _random_masks(model, seed=5)):
    expected = _logits(model, weights, masks, images)
    masked = masking.get_masks(model)
    permuted_masks = alignment.permute_masks(spec, masked, perms)
    # Pruned weights are 0 in a masked run's weights: permute what the model holds.
    held = alignment.apply_permutation(spec, trainer.weights_dict(model), perms)
    actual = _logits(model, held, permuted_masks, images)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)
    for path, mask in permuted_masks.items():  # each mask moved with its weights
      assert mask.sum() == masked[path].sum()
      assert not np.any(held[path][mask == 0]), path
  del permuted


@pytest.mark.parametrize('name,input_shape', NETWORKS[:3] + [
    pytest.param('cifar_vgg_11', (32, 32, 3), marks=pytest.mark.slow)])
def test_weight_matching_recovers_a_permuted_copy(name, input_shape):
  model = models.build(name, input_shape, 10, 0)
  spec = alignment.permutation_spec(name)
  weights_a = _randomized(trainer.weights_dict(model), seed=1)
  weights_b = alignment.apply_permutation(
      spec, weights_a, alignment.random_permutation(spec, weights_a, seed=7))
  perms = alignment.weight_matching(spec, weights_a, weights_b, seed=0)
  aligned = alignment.apply_permutation(spec, weights_b, perms)
  for path in weights_a:
    np.testing.assert_array_equal(aligned[path], weights_a[path], err_msg=path)


def _tiny_weights(hidden, seed, inputs=6, outputs=3):
  rng = np.random.default_rng(seed)
  sizes = [inputs] + list(hidden) + [outputs]
  names = [f'fc{i + 1}' for i in range(len(hidden))] + ['fc_out']
  weights = {}
  for name, fan_in, fan_out in zip(names, sizes[:-1], sizes[1:]):
    weights[f'{name}/kernel'] = rng.normal(size=(fan_in, fan_out)).astype(np.float32)
    weights[f'{name}/bias'] = rng.normal(size=fan_out).astype(np.float32)
  return weights


def _all_permutations(sizes):
  """Every joint permutation of groups with these sizes, as dicts."""
  groups = sorted(sizes)
  for choice in itertools.product(*(itertools.permutations(range(sizes[g])) for g in groups)):
    yield {g: np.array(p) for g, p in zip(groups, choice)}


def test_weight_matching_one_group_is_the_brute_force_optimum():
  spec = alignment.permutation_spec('lenet_6')
  for seed in range(5):
    weights_a, weights_b = _tiny_weights([6], seed), _tiny_weights([6], seed + 100)
    best = max(_all_permutations({'fc1': 6}), key=lambda p: alignment.weight_matching_objective(
        spec, weights_a, weights_b, p))
    perms = alignment.weight_matching(spec, weights_a, weights_b, seed=seed)
    np.testing.assert_array_equal(perms['fc1'], best['fc1'])


def test_weight_matching_two_groups_against_brute_force():
  """Coordinate descent on independent random networks: every result is optimal in
  each group with the others fixed (checked by brute force) and never worse than no
  permutation; it need not be the best of all 5! * 4! joint permutations (here it is
  for 2 of these 6 pairs), which only bounds it."""
  spec = alignment.permutation_spec('lenet_5_4')
  sizes = {'fc1': 5, 'fc2': 4}
  objective = alignment.weight_matching_objective
  for seed in range(6):
    weights_a, weights_b = _tiny_weights([5, 4], seed), _tiny_weights([5, 4], seed + 100)
    perms = alignment.weight_matching(spec, weights_a, weights_b, seed=seed)
    found = objective(spec, weights_a, weights_b, perms)
    assert found >= objective(spec, weights_a, weights_b,
                              alignment.identity_permutation(spec, weights_a)) - 1e-9
    for group in sizes:
      for alternative in itertools.permutations(range(sizes[group])):
        other = dict(perms, **{group: np.array(alternative)})
        assert objective(spec, weights_a, weights_b, other) <= found + 1e-9
    best = max(objective(spec, weights_a, weights_b, p) for p in _all_permutations(sizes))
    assert found <= best + 1e-9


def test_weight_matching_finds_a_noisy_permuted_copy():
  spec = alignment.permutation_spec('lenet_5_4')
  weights_a = _tiny_weights([5, 4], seed=0)
  true = {'fc1': np.array([3, 0, 4, 1, 2]), 'fc2': np.array([2, 3, 1, 0])}
  noise = _tiny_weights([5, 4], seed=1)
  weights_b = alignment.apply_permutation(
      spec, {p: weights_a[p] + 0.1 * noise[p] for p in weights_a}, true)
  best = max(_all_permutations({'fc1': 5, 'fc2': 4}),
             key=lambda p: alignment.weight_matching_objective(spec, weights_a, weights_b, p))
  perms = alignment.weight_matching(spec, weights_a, weights_b)
  inverse = {g: np.argsort(p) for g, p in true.items()}
  for group in true:
    np.testing.assert_array_equal(perms[group], best[group])
    np.testing.assert_array_equal(perms[group], inverse[group])


def test_weight_matching_is_deterministic():
  model = models.build('cifar_resnet_8', (8, 8, 3), 10, 0)
  spec = alignment.permutation_spec('cifar_resnet_8')
  weights_a = _randomized(trainer.weights_dict(model), 1)
  weights_b = _randomized(trainer.weights_dict(models.build('cifar_resnet_8', (8, 8, 3), 10, 1)), 2)
  first = alignment.weight_matching(spec, weights_a, weights_b, seed=3)
  second = alignment.weight_matching(spec, dict(weights_a), dict(weights_b), seed=3)
  assert set(first) == set(second)
  for group in first:
    np.testing.assert_array_equal(first[group], second[group])


def _numpy_activations(weights, images):
  h1 = np.maximum(images @ weights['fc1/kernel'] + weights['fc1/bias'], 0)
  h2 = np.maximum(h1 @ weights['fc2/kernel'] + weights['fc2/bias'], 0)
  return {'fc1': h1.astype(np.float64), 'fc2': h2.astype(np.float64)}


def test_activation_matching_against_brute_force():
  spec = alignment.permutation_spec('lenet_5_4')
  images = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
  model_a, model_b = (models.build('lenet_5_4', (6,), 3, seed) for seed in (0, 1))
  for seed in range(3):
    weights_a, weights_b = _tiny_weights([5, 4], seed), _tiny_weights([5, 4], seed + 100)
    # The models are overwritten with the weights given.
    correlations = alignment.activation_correlations(spec, model_a, model_b, images,
                                                     batch_size=128, weights_a=weights_a,
                                                     weights_b=weights_b)
    perms = alignment.activation_matching(spec, model_a, model_b, images, batch_size=128)
    acts_a, acts_b = _numpy_activations(weights_a, images), _numpy_activations(weights_b, images)
    for group, n in (('fc1', 5), ('fc2', 4)):
      # np.corrcoef of [A's units; B's units]: the off-diagonal block (nan for a dead unit).
      with np.errstate(invalid='ignore', divide='ignore'):
        expected = np.nan_to_num(np.corrcoef(acts_a[group].T, acts_b[group].T)[:n, n:])
      np.testing.assert_allclose(correlations[group], expected, atol=1e-5)
      best = max(itertools.permutations(range(n)),
                 key=lambda p: expected[np.arange(n), list(p)].sum())
      np.testing.assert_array_equal(perms[group], best)


@pytest.mark.parametrize('name,input_shape', [('lenet_5_4', (6,)), ('lenet_300_100', (28, 28, 1)),
                                              ('cifar_resnet_8', (8, 8, 3))])
def test_activation_matching_recovers_a_permuted_copy(name, input_shape):
  spec = alignment.permutation_spec(name)
  model_a = models.build(name, input_shape, 10, 0)
  weights_a = _randomized(trainer.weights_dict(model_a), 1)
  trainer.assign_weights(model_a, weights_a)
  truth = alignment.random_permutation(spec, weights_a, seed=9)
  weights_b = alignment.apply_permutation(spec, weights_a, truth)
  model_b = models.build(name, input_shape, 10, 0)
  trainer.assign_weights(model_b, weights_b)
  images = tf.random.stateless_normal((64,) + input_shape, seed=(1, 2))
  perms = alignment.activation_matching(spec, model_a, model_b, images, batch_size=32)
  again = alignment.activation_matching(spec, model_a, model_b, images, batch_size=32)
  for group in perms:  # deterministic
    np.testing.assert_array_equal(perms[group], again[group])
  # A unit that is 0 on every image and position (random BatchNorm state leaves a few
  # in the ResNet) correlates with nothing, and can be matched to any other such unit.
  correlations = alignment.activation_correlations(spec, model_a, model_b, images)
  inverse = {g: np.argsort(p) for g, p in truth.items()}
  for group, correlation in correlations.items():
    live = np.abs(correlation).max(axis=1) > 0
    assert live.mean() > 0.9, group
    np.testing.assert_array_equal(perms[group][live], inverse[group][live], err_msg=group)
  if name.startswith('lenet'):  # no dead units here: exactly A
    aligned = alignment.apply_permutation(spec, weights_b, perms)
    for path in weights_a:
      np.testing.assert_array_equal(aligned[path], weights_a[path], err_msg=path)


def test_repair_without_batch_norm_sets_the_interpolated_statistics():
  name, shape = 'lenet_20_10', (6,)
  spec = alignment.permutation_spec(name)
  model = _masked_model(name, shape)
  masks = _random_masks(model, seed=3, density=0.7)
  masking.set_masks(model, masks)
  weights_a = {p: v * masks.get(p, 1) for p, v in _tiny_weights([20, 10], 0, outputs=10).items()}
  weights_b = {p: v * masks.get(p, 1) for p, v in _tiny_weights([20, 10], 1, outputs=10).items()}
  images = np.random.default_rng(2).normal(size=(500, 6)).astype(np.float32)
  stats_a = alignment.layer_statistics(spec, model, weights_a, images, batch_size=200)
  stats_b = alignment.layer_statistics(spec, model, weights_b, images, batch_size=200)
  alpha = 0.3
  repaired = alignment.repair(spec, model, weights_a, weights_b, alpha, images, stats_a, stats_b,
                              batch_size=200)
  stats = alignment.layer_statistics(spec, model, repaired, images)
  for layer in ('fc1', 'fc2'):
    for got, a, b in zip(stats[layer], stats_a[layer], stats_b[layer]):
      np.testing.assert_allclose(got, (1 - alpha) * a + alpha * b, rtol=1e-4, atol=1e-5)
    assert np.all(repaired[f'{layer}/kernel'][masks[f'{layer}/kernel'] == 0] == 0)
  np.testing.assert_allclose(repaired['fc_out/kernel'],
                             0.7 * weights_a['fc_out/kernel'] + 0.3 * weights_b['fc_out/kernel'],
                             rtol=1e-5, atol=1e-7)
  # At an endpoint there is nothing to repair.
  at_a = alignment.repair(spec, model, weights_a, weights_b, 0.0, images, stats_a, stats_b)
  for path in weights_a:
    np.testing.assert_allclose(at_a[path], weights_a[path], rtol=1e-4, atol=1e-5)


def test_repair_with_batch_norm_sets_the_interpolated_statistics():
  name, shape = 'cifar_resnet_8', (8, 8, 3)
  spec = alignment.permutation_spec(name)
  model = _masked_model(name, shape)
  weights_a = _randomized(trainer.weights_dict(model), 1)
  weights_b = _randomized(trainer.weights_dict(_masked_model(name, shape, seed=1)), 2)
  # One batch: the reset's averaged batch statistics are then the pooled statistics.
  images = tf.random.stateless_normal((64,) + shape, seed=(5, 6))
  stats_a = alignment.layer_statistics(spec, model, weights_a, images, batch_size=64)
  stats_b = alignment.layer_statistics(spec, model, weights_b, images, batch_size=64)
  alpha = 0.5
  repaired = alignment.repair(spec, model, weights_a, weights_b, alpha, images, stats_a, stats_b,
                              batch_size=64)
  stats = alignment.layer_statistics(spec, model, repaired, images, batch_size=64)
  assert set(stats) == {p.split('/')[0] for p in weights_a if p.endswith('/gamma')}
  for layer in spec.repair_layers:
    (mean, std), (mean_a, std_a), (mean_b, std_b) = stats[layer], stats_a[layer], stats_b[layer]
    np.testing.assert_allclose(mean, 0.5 * (mean_a + mean_b), atol=1e-4, err_msg=layer)
    # BatchNorm's epsilon (1e-5) against variances of order 1e-2 to 1.
    np.testing.assert_allclose(std, 0.5 * (std_a + std_b), rtol=2e-3, atol=1e-4, err_msg=layer)
    interpolated = 0.5 * (weights_a[f'{layer}/gamma'] + weights_b[f'{layer}/gamma'])
    assert np.all(np.sign(repaired[f'{layer}/gamma']) == np.where(interpolated < 0, -1, 1))
  np.testing.assert_allclose(repaired['conv/kernel'],
                             0.5 * (weights_a['conv/kernel'] + weights_b['conv/kernel']), rtol=1e-6)


def test_interpolation_masks_are_the_union():
  a = {'fc1/kernel': np.array([[1, 0], [0, 0]], np.float32)}
  b = {'fc1/kernel': np.array([[0, 0], [1, 0]], np.float32)}
  np.testing.assert_array_equal(alignment.interpolation_masks(a, b)['fc1/kernel'],
                                [[1, 0], [1, 0]])
  assert alignment.interpolation_masks(a, None) is None


def test_bad_input_is_a_user_error():
  with pytest.raises(UserError, match='no permutation spec for .inception_v3'):
    alignment.permutation_spec('inception_v3')
  with pytest.raises(UserError, match='unknown model'):
    alignment.permutation_spec('mlp_3')
  with pytest.raises(UserError, match='is not 6n\\+2'):
    alignment.permutation_spec('cifar_resnet_21')
  spec = alignment.permutation_spec('lenet_5_4')
  weights = _tiny_weights([5, 4], 0)
  with pytest.raises(UserError, match='fc1/bias axis 0 has 6 units, other variables of group'):
    alignment.apply_permutation(spec, dict(weights, **{'fc1/bias': np.zeros(6)}),
                                alignment.identity_permutation(spec, weights))
  with pytest.raises(UserError, match=r'fc1/kernel has shape \(6, 5\) in A and \(6, 6\) in B'):
    alignment.weight_matching(spec, weights, _tiny_weights([6, 4], 0))
  with pytest.raises(UserError, match='shape'):
    alignment.weight_matching(spec, weights, _tiny_weights([5, 4], 0, inputs=7))
  with pytest.raises(UserError, match='missing'):
    alignment.apply_permutation(spec, {p: v for p, v in weights.items() if p != 'fc1/bias'},
                                alignment.identity_permutation(spec, weights))
  with pytest.raises(UserError, match='not a permutation of 5'):
    alignment.apply_permutation(spec, weights, {'fc1': np.zeros(5, int), 'fc2': np.arange(4)})
  with pytest.raises(UserError, match='missing'):
    alignment.apply_permutation(spec, weights, {'fc1': np.arange(5)})
  with pytest.raises(UserError, match='not variables'):
    alignment.permute_masks(spec, {'fc9/kernel': np.ones((5, 4))},
                            alignment.identity_permutation(spec, weights))
  with pytest.raises(UserError, match='max_iterations'):
    alignment.weight_matching(spec, weights, weights, max_iterations=0)

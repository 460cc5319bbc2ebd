"""Initial weights against OpenLTH's initialization, by their moments.

OpenLTH (models/initializers.py) draws every Conv2d and Linear weight from
torch.nn.init.kaiming_normal_ (fan-in, gain sqrt(2), untruncated) and leaves
biases at torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Its BatchNorm
initializer 'uniform' (gamma ~ U[0, 1)) only runs since commit 2ce732f (May
2020, "Fixing bug that disabled batchnorm initialization"), after the paper's
experiments, so the paper's networks had torch's BatchNorm default: gamma 1,
beta 0, which lmc_tf keeps (docs/fidelity.md).
"""
import lmc_tf  # pylint: disable=unused-import  (must precede TensorFlow)

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import torch_models  # pylint: disable=g-import-not-at-top,wrong-import-position

from lmc_tf import export  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmc_tf import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmc_tf.training import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position

NETWORKS = [('lenet_300_100', (28, 28, 1)), ('cifar_resnet_20', (32, 32, 3)),
            ('cifar_vgg_16', (32, 32, 3))]


def _openlth(name):
  """The PyTorch network of `name`, initialized as OpenLTH initializes it."""
  torch.manual_seed(0)
  if name.startswith('lenet'):
    module = torch_models.LeNet([300, 100], 10, 784)
  elif name.startswith('cifar_resnet'):
    module = torch_models.CifarResNet(20, 16, 10)
  else:
    module = torch_models.CifarVGG(16, 10)
  for layer in module.modules():
    if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
      torch.nn.init.kaiming_normal_(layer.weight)
  return {k: v.numpy() for k, v in module.state_dict().items()}


def _lmc_tf(name, image_shape):
  """lmc_tf's initial weights of `name`, under PyTorch's names (lmc_tf.export)."""
  weights = trainer.weights_dict(models.build(name, image_shape, 10, 0))
  return export.to_torch_state_dict(weights, name)


def _kernels(state):
  return {k: v for k, v in state.items() if k.endswith('.weight') and v.ndim > 1}


@pytest.mark.parametrize('name,image_shape', NETWORKS)
def test_kernels_are_kaiming_normal_as_openlth_draws_them(name, image_shape):
  ours, theirs = _kernels(_lmc_tf(name, image_shape)), _kernels(_openlth(name))
  assert ours.keys() == theirs.keys()
  for key, weight in ours.items():
    fan_in = int(np.prod(weight.shape[1:]))
    expected_std = np.sqrt(2.0 / fan_in)
    # Both within the sampling error of the same N(0, 2/fan_in): 5 standard errors of the
    # standard deviation and of the mean, and no truncation (the largest |w| goes past 2 std).
    for sample in (weight, theirs[key]):
      error = 5 / np.sqrt(2 * sample.size)
      assert abs(sample.std() / expected_std - 1) < max(error, 1e-3), key
      assert abs(sample.mean()) < 5 * expected_std / np.sqrt(sample.size), key
      if sample.size > 1000:
        assert np.abs(sample).max() > 3 * expected_std, key


@pytest.mark.parametrize('name,image_shape', NETWORKS[1:])
def test_batch_norm_starts_at_gamma_1_beta_0(name, image_shape):
  state = _lmc_tf(name, image_shape)
  bn = [k[:-len('.running_mean')] for k in state if k.endswith('.running_mean')]
  assert bn
  for prefix in bn:
    np.testing.assert_array_equal(state[f'{prefix}.weight'], 1.0)
    np.testing.assert_array_equal(state[f'{prefix}.bias'], 0.0)
    np.testing.assert_array_equal(state[f'{prefix}.running_mean'], 0.0)
    np.testing.assert_array_equal(state[f'{prefix}.running_var'], 1.0)


@pytest.mark.parametrize('name,image_shape', NETWORKS)
def test_dense_biases_are_drawn_as_openlth_draws_them(name, image_shape):
  ours, theirs = _lmc_tf(name, image_shape), _openlth(name)
  for key in theirs:
    if key.startswith(('fc', 'fc_layers')) and key.endswith('.bias'):
      fan_in = theirs[key[:-len('bias')] + 'weight'].shape[1]
      bound = 1 / np.sqrt(fan_in)
      assert np.abs(theirs[key]).max() <= bound and np.abs(ours[key]).max() <= bound, key
      # U(-b, b) has standard deviation b / sqrt(3).
      assert abs(ours[key].std() / (bound / np.sqrt(3)) - 1) < 0.5, key

"""lmc_tf's Keras networks against PyTorch references: same weights, same inputs, same outputs.

Weights go Keras -> PyTorch through lmc_tf.export (the same mapping the binary
uses). BatchNorm statistics, scales and offsets and the dense biases are drawn at
random first, so that eval-mode BatchNorm (epsilon included) is not an identity.
Logits are compared in eval mode as max|keras - torch| / max|torch| <= 1e-4.

The references are OpenLTH's CIFAR networks and LeNet (tests/reference/torch_models.py)
and torchvision's resnet50 and inception_v3. Every difference these tests found
was fixed in lmc_tf's models (stride-2 padding, ResNet-50's max pool, Inception-v3's
branch pools, auxiliary BatchNorm epsilon and trunk BatchNorm momentum; see
docs/fidelity.md).

  pip install --no-deps -r requirements-reference.txt   # PyTorch CPU, see that file
"""
import lmc_tf  # pylint: disable=unused-import  (must precede TensorFlow)

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import torch_models  # pylint: disable=g-import-not-at-top,wrong-import-position

from lmc_tf import export  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmc_tf import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmc_tf.training import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position

TOLERANCE = 1e-4
CLASSES = 10


def relative_difference(keras_out, torch_out):
  return float(np.abs(keras_out - torch_out).max() / np.abs(torch_out).max())


def randomized(weights, seed):
  """`weights` with random BatchNorm statistics, scales, offsets and biases."""
  rng = np.random.default_rng(seed)
  draws = {'moving_mean': lambda s: rng.normal(0, 0.1, s),
           'moving_variance': lambda s: rng.uniform(0.5, 2.0, s),
           'gamma': lambda s: rng.uniform(0.5, 1.5, s),
           'beta': lambda s: rng.normal(0, 0.1, s),
           'bias': lambda s: rng.normal(0, 0.1, s)}
  out = {}
  for path, value in weights.items():
    draw = draws.get(path.rsplit('/', 1)[1])
    out[path] = value if draw is None else draw(value.shape).astype(value.dtype)
  return out


def torch_model(name, num_inputs=784):
  """The PyTorch reference network of an lmc_tf model name (eval mode, random weights)."""
  return torch_models.reference_network(name, CLASSES, num_inputs).eval()


class Case:
  """An lmc_tf model with randomized weights and its PyTorch twin holding the same weights."""

  def __init__(self, name, image_shape, image_shape_for_export=None):
    self.name, self.image_shape = name, image_shape
    self.keras = models.build(name, image_shape, CLASSES, init_seed=0)
    self.weights = randomized(trainer.weights_dict(self.keras), seed=1)
    trainer.assign_weights(self.keras, self.weights)
    self.state = export.to_torch_state_dict(self.weights, name, image_shape_for_export)
    self.torch = torch_model(name, int(np.prod(image_shape)))
    self.torch.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()},
                               strict=True)
    self.images = np.random.default_rng(2).normal(size=(2,) + image_shape).astype(np.float32)

  def keras_outputs(self):
    outputs = self.keras(self.images, training=False)
    return [o.numpy() for o in (outputs if isinstance(outputs, list) else [outputs])]

  def torch_outputs(self):
    """Logits (and, for inception_v3, the auxiliary logits) of the PyTorch network."""
    images = torch.from_numpy(self.images.transpose(0, 3, 1, 2))
    if self.name != 'inception_v3':
      with torch.no_grad():
        return [self.torch(images).numpy()]
    # In eval mode torchvision's Inception3 returns only the main logits: the auxiliary
    # head is run on Mixed_6e's output, as in training.
    captured = []
    hook = self.torch.Mixed_6e.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
      with torch.no_grad():
        logits = self.torch(images).numpy()
        return [logits, self.torch.AuxLogits(captured[0]).numpy()]
    finally:
      hook.remove()

  def differences(self):
    return [relative_difference(k, t) for k, t in zip(self.keras_outputs(), self.torch_outputs())]


_CASES = {}


def case(name, image_shape, image_shape_for_export=None):
  key = (name, image_shape)
  if key not in _CASES:
    _CASES[key] = Case(name, image_shape, image_shape_for_export)
  return _CASES[key]


# --- The state_dicts fit the PyTorch networks ---------------------------------------------

@pytest.mark.parametrize('name,image_shape', [
    ('lenet_300_100', (28, 28, 1)), ('cifar_resnet_20', (32, 32, 3)),
    ('cifar_vgg_16', (32, 32, 3)), ('resnet_50', (64, 64, 3)), ('inception_v3', (299, 299, 3))])
def test_every_torch_entry_is_filled_once_in_its_shape(name, image_shape):
  state = case(name, image_shape).state
  reference = torch_model(name).state_dict()
  assert sorted(state) == sorted(reference)
  for key, value in reference.items():
    assert state[key].shape == tuple(value.shape), key
    assert state[key].dtype == value.numpy().dtype, key


# --- Eval-mode logits ---------------------------------------------------------------------

def test_lenet_300_100():
  assert max(case('lenet_300_100', (28, 28, 1)).differences()) < TOLERANCE


def test_lenet_on_color_images():
  """Keras flattens (H, W, C), PyTorch (C, H, W): export permutes the first layer's rows."""
  assert max(case('lenet_300_100', (32, 32, 3), (32, 32, 3)).differences()) < TOLERANCE


@pytest.mark.parametrize('size', [32, 33])
def test_cifar_resnet_20(size):
  """Even and odd sizes: the stride-2 convolutions pad 1 on every side, as OpenLTH's."""
  assert max(case('cifar_resnet_20', (size, size, 3)).differences()) < TOLERANCE


def test_cifar_vgg_16():
  assert max(case('cifar_vgg_16', (32, 32, 3)).differences()) < TOLERANCE


def test_cifar_vgg_16_from_openlth_weights_with_conv_biases():
  """OpenLTH's VGG convs have biases; importing folds them into BN's moving mean."""
  reference = torch_model('cifar_vgg_16')
  generator = torch.Generator().manual_seed(3)
  with torch.no_grad():
    for module in reference.modules():
      if isinstance(module, torch.nn.Conv2d):
        module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
        module.running_var.uniform_(0.5, 2.0, generator=generator)
        module.weight.uniform_(0.5, 1.5, generator=generator)
  weights = export.from_torch_state_dict(
      {k: v.numpy() for k, v in reference.state_dict().items()}, 'cifar_vgg_16')
  keras = models.build('cifar_vgg_16', (32, 32, 3), CLASSES, 0)
  trainer.assign_weights(keras, weights)
  images = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  assert relative_difference(keras(images, training=False).numpy(), expected) < TOLERANCE


@pytest.mark.parametrize('size', [64, 65])
def test_resnet_50(size):
  """The stem, the max pool and the stride-2 3x3 convs pad symmetrically, as torchvision's;
  the stride sits on the 3x3 conv in both (ResNet v1.5), the shortcuts are the same 1x1
  stride-2 convs + BN, and BN epsilon is 1e-5 in both."""
  assert max(case('resnet_50', (size, size, 3)).differences()) < TOLERANCE


def test_inception_v3():
  """Main and auxiliary logits: the branch order, the asymmetric 1x7/7x1 kernels, the valid
  stride-2 convs and pools, the branch pools that count their zero padding, and the
  auxiliary head (5x5 stride-3 pool on Mixed_6e = mixed7) are torchvision's."""
  assert max(case('inception_v3', (299, 299, 3)).differences()) < TOLERANCE


# --- Training-mode BatchNorm: normalization by batch statistics and their moving averages ---

def _after_one_training_step(case_, images):
  """(lmc_tf weights after a training-mode forward pass of Keras, the same of PyTorch)."""
  before = case_.keras.get_weights()
  try:
    case_.keras(images, training=True)
    keras_weights = trainer.weights_dict(case_.keras)
  finally:
    case_.keras.set_weights(before)
  state = {k: v.clone() for k, v in case_.torch.state_dict().items()}
  case_.torch.train()
  try:
    with torch.no_grad():
      case_.torch(torch.from_numpy(images.transpose(0, 3, 1, 2)))
    torch_weights = export.from_torch_state_dict(  # copies: load_state_dict writes in place
        {k: v.numpy().copy() for k, v in case_.torch.state_dict().items()}, case_.name)
  finally:
    case_.torch.load_state_dict(state)
    case_.torch.eval()
  return keras_weights, torch_weights


def _moving_statistics_difference(case_, keras_weights, torch_weights, keys=None):
  """max over BatchNorm moving statistics of relative_difference(keras, torch) after a step."""
  keys = keys or [k for k in case_.weights if '/moving_' in k]
  return max(relative_difference(keras_weights[k], torch_weights[k]) for k in keys)


@pytest.mark.parametrize('name,image_shape', [
    ('cifar_resnet_20', (32, 32, 3)), ('cifar_vgg_16', (32, 32, 3)), ('resnet_50', (64, 64, 3))])
def test_batch_norm_updates_match(name, image_shape):
  """Keras momentum 0.9 is PyTorch's momentum 0.1, and both update the moving variance with
  the unbiased batch variance."""
  case_ = case(name, image_shape)
  images = np.random.default_rng(5).normal(size=(4,) + image_shape).astype(np.float32)
  keras_weights, torch_weights = _after_one_training_step(case_, images)
  assert _moving_statistics_difference(case_, keras_weights, torch_weights) < TOLERANCE


def test_inception_v3_batch_norm_updates():
  """Momentum 0.9 in the trunk too (torchvision's 0.1), and the same batch statistics."""
  case_ = case('inception_v3', (299, 299, 3))
  images = np.random.default_rng(5).normal(size=(2, 299, 299, 3)).astype(np.float32)
  keras_weights, torch_weights = _after_one_training_step(case_, images)
  assert _moving_statistics_difference(case_, keras_weights, torch_weights) < TOLERANCE

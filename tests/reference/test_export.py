"""lmc_tf.export's mapping between lmc_tf weights and PyTorch state_dicts, without PyTorch.

The mapping is numpy on both sides: every network of lmc_tf/models/registry.py
round-trips exactly, and every lmc_tf variable is used once. That the PyTorch
side fits the PyTorch networks (every entry filled once, in its shape) and
computes the same function is tests/reference/test_equivalence.py's (with torch).
"""
import lmc_tf  # pylint: disable=unused-import  (must precede TensorFlow)

from absl.testing import flagsaver
import numpy as np
import pytest

from lmc_tf import export
from lmc_tf import io_utils
from lmc_tf import models
from lmc_tf.errors import UserError
from lmc_tf.training import trainer

from conftest import run_binary

# (model name, image shape): every family of the registry, at other depths and widths too.
NETWORKS = [
    ('lenet_300_100', (28, 28, 1)),
    ('lenet_100', (28, 28, 1)),
    ('cifar_resnet_20', (32, 32, 3)),
    ('cifar_resnet_14_32', (32, 32, 3)),
    ('cifar_vgg_11', (32, 32, 3)),
    ('cifar_vgg_16', (32, 32, 3)),
    ('cifar_vgg_19', (32, 32, 3)),
    ('resnet_50', (64, 64, 3)),
    ('inception_v3', (299, 299, 3)),  # its auxiliary head needs 299x299 images
]

_WEIGHTS = {}


def lmc_weights(name, image_shape, num_classes=10):
  """weights_dict of a freshly built model (built once per test session)."""
  key = (name, image_shape, num_classes)
  if key not in _WEIGHTS:
    _WEIGHTS[key] = trainer.weights_dict(models.build(name, image_shape, num_classes, 0))
  return _WEIGHTS[key]


def _equal(a, b):
  return (sorted(a) == sorted(b) and
          all(np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.array_equal(a[k], b[k])
              for k in a))


@pytest.mark.parametrize('name,image_shape', NETWORKS)
def test_round_trip_is_exact(name, image_shape):
  weights = lmc_weights(name, image_shape)
  state = export.to_torch_state_dict(weights, name)
  layout = export.layout(name)
  # One PyTorch entry per lmc_tf variable, plus num_batches_tracked per BatchNorm, a
  # BatchNorm weight per scale-less Keras BatchNorm and a bias per OpenLTH VGG conv.
  extra = sum(1 + (kind == 'bn_no_scale') for kind, *_ in layout if kind.startswith('bn'))
  extra += sum(kind == 'conv_bias' for kind, *_ in layout)
  assert len(state) == len(weights) + extra
  assert _equal(export.from_torch_state_dict(state, name), weights)
  assert _equal(export.to_torch_state_dict(export.from_torch_state_dict(state, name), name),
                state)


def test_layouts_transpose_kernels_and_rename_batch_norm():
  state = export.to_torch_state_dict(lmc_weights('cifar_resnet_20', (32, 32, 3)),
                                     'cifar_resnet_20')
  assert state['blocks.3.conv1.weight'].shape == (32, 16, 3, 3)  # Keras (3, 3, 16, 32)
  assert state['blocks.3.shortcut.0.weight'].shape == (32, 16, 1, 1)
  assert state['fc.weight'].shape == (10, 64)  # Keras (64, 10)
  assert state['bn.running_var'].shape == (16,)
  counter = state['bn.num_batches_tracked']
  assert counter.dtype == np.int64 and counter.shape == () and counter == 0
  assert 'blocks.0.shortcut.0.weight' not in state  # identity shortcuts have no parameters
  vgg = export.to_torch_state_dict(lmc_weights('cifar_vgg_16', (32, 32, 3)), 'cifar_vgg_16')
  assert 'layers.3.conv.weight' in vgg and 'layers.2.conv.weight' not in vgg  # 2 is a max pool
  assert not np.any(vgg['layers.3.conv.bias'])
  inception = export.to_torch_state_dict(lmc_weights('inception_v3', (299, 299, 3)),
                                         'inception_v3')
  assert inception['Mixed_7c.branch3x3_2b.conv.weight'].shape == (384, 384, 3, 1)
  assert inception['AuxLogits.conv1.conv.weight'].shape == (768, 128, 5, 5)
  assert np.all(inception['Mixed_5b.branch_pool.bn.weight'] == 1)


def test_vgg_conv_biases_fold_into_the_moving_mean():
  state = export.to_torch_state_dict(lmc_weights('cifar_vgg_11', (32, 32, 3)), 'cifar_vgg_11')
  state['layers.0.conv.bias'] = np.full(64, 0.5, np.float32)
  state['layers.0.bn.running_mean'] = np.full(64, 2.0, np.float32)
  weights = export.from_torch_state_dict(state, 'cifar_vgg_11')
  assert np.all(weights['bn1/moving_mean'] == 1.5)


def test_lenet_on_color_images_permutes_the_flatten_order():
  weights = dict(lmc_weights('lenet_300_100', (4, 5, 3)))
  kernel = np.arange(60 * 300, dtype=np.float32).reshape(60, 300)
  weights['fc1/kernel'] = kernel
  with pytest.raises(UserError, match='--image_shape=H,W,C'):
    export.to_torch_state_dict(weights, 'lenet_300_100')
  state = export.to_torch_state_dict(weights, 'lenet_300_100', image_shape=(4, 5, 3))
  # Keras row (h, w, c) is PyTorch column (c, h, w).
  assert state['fc_layers.0.weight'][7, 2 * 20 + 1 * 5 + 4] == kernel[(1 * 5 + 4) * 3 + 2, 7]
  back = export.from_torch_state_dict(state, 'lenet_300_100', image_shape=['4', '5', '3'])
  assert _equal(back, weights)
  with pytest.raises(UserError, match='not H,W,C of 60'):
    export.to_torch_state_dict(weights, 'lenet_300_100', image_shape=(5, 5, 3))


def test_mismatched_weights_are_one_line_errors():
  lenet = lmc_weights('lenet_300_100', (28, 28, 1))
  with pytest.raises(UserError, match="do not fit 'cifar_resnet_20'.*missing.*unexpected"):
    export.to_torch_state_dict(lenet, 'cifar_resnet_20')
  with pytest.raises(UserError, match="do not fit 'lenet_300_100'.*missing"):
    export.from_torch_state_dict({'fc.weight': np.zeros((10, 100))}, 'lenet_300_100')
  with pytest.raises(UserError, match='unknown model'):
    export.to_torch_state_dict(lenet, 'resnet_18')
  with pytest.raises(UserError, match='6n\\+2'):
    export.layout('cifar_resnet_21')
  with pytest.raises(UserError, match='only 32x32 VGGs'):
    export.to_torch_state_dict(lmc_weights('cifar_vgg_11', (64, 64, 3)), 'cifar_vgg_11')


def test_inception_trunk_batch_norm_weights_must_be_one():
  state = export.to_torch_state_dict(lmc_weights('inception_v3', (299, 299, 3)), 'inception_v3')
  state['Mixed_6a.branch3x3.bn.weight'] = state['Mixed_6a.branch3x3.bn.weight'] * 0.5
  with pytest.raises(UserError, match='Mixed_6a.branch3x3.bn.weight is not all 1'):
    export.from_torch_state_dict(state, 'inception_v3')


@pytest.fixture
def flags_parsed():
  """export.FLAGS readable in this process (at their defaults, or as flagsaver sets them)."""
  parsed = export.FLAGS.is_parsed()
  if not parsed:
    export.FLAGS.mark_as_parsed()
  yield
  if not parsed:
    export.FLAGS.unparse_flags()


def _export_in_process(**flag_values):
  with flagsaver.flagsaver(**flag_values):
    export.main(['lmc_tf.export'])


def test_bad_flags_are_user_errors(flags_parsed, tmp_path):  # pylint: disable=unused-argument
  npz = str(tmp_path / 'weights.npz')
  with pytest.raises(UserError, match='--output is required'):
    _export_in_process(weights=npz, model='lenet_300_100', format='pytorch')
  with pytest.raises(UserError, match='--format=onnx is not one of pytorch, lmc_tf'):
    _export_in_process(weights=npz, model='lenet_300_100', format='onnx', output='x')
  with pytest.raises(UserError, match='is an lmc_tf .npz: convert it with --format=pytorch'):
    _export_in_process(weights=npz, model='lenet_300_100', format='lmc_tf', output='x')
  with pytest.raises(UserError, match='unknown model'):
    _export_in_process(weights=npz, model='vit', format='pytorch', output='x')
  pytest.importorskip('torch')
  with pytest.raises(UserError, match='does not exist'):
    _export_in_process(weights=npz, model='lenet_300_100', format='pytorch', output='x')


@pytest.mark.slow
def test_binary_round_trip(flags_parsed, tmp_path):  # pylint: disable=unused-argument
  pytest.importorskip('torch')
  weights = dict(lmc_weights('lenet_300_100', (28, 28, 1)))
  weights['fc2/bias'] = np.linspace(-1, 1, 100, dtype=np.float32)
  io_utils.write_npz(tmp_path / 'weights.npz', weights)
  first = run_binary('lmc_tf.export', f'--weights={tmp_path / "weights.npz"}',
                     '--model=lenet_300_100', '--format=pytorch',
                     f'--output={tmp_path / "state_dict.pt"}')
  assert first.returncode == 0, first.stderr[-1500:]
  assert 'Wrote 6 arrays' in first.stdout
  _export_in_process(weights=str(tmp_path / 'state_dict.pt'), model='lenet_300_100',
                     format='lmc_tf', output=str(tmp_path / 'back.npz'))
  assert _equal(io_utils.read_npz(tmp_path / 'back.npz'), weights)
  wrong = run_binary('lmc_tf.export', f'--weights={tmp_path / "state_dict.pt"}',
                     '--model=cifar_resnet_20', '--format=lmc_tf',
                     f'--output={tmp_path / "wrong.npz"}')
  last = wrong.stderr.strip().splitlines()[-1]
  assert wrong.returncode == 1 and last.startswith("error: the PyTorch state_dict entries do "
                                                   "not fit 'cifar_resnet_20'"), wrong.stderr
  assert 'Traceback' not in wrong.stderr
  (tmp_path / 'junk.pt').write_bytes(b'not a pickle')
  with pytest.raises(UserError, match='junk.pt is unreadable'):
    _export_in_process(weights=str(tmp_path / 'junk.pt'), model='lenet_300_100',
                       format='lmc_tf', output=str(tmp_path / 'junk.npz'))

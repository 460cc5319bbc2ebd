r"""Converts weights between lmc_tf (weights.npz) and PyTorch state_dicts.

  python -m lmc_tf.export --weights=RUN_DIR/weights.npz --model=cifar_resnet_20 \
      --format=pytorch --output=state_dict.pt
  python -m lmc_tf.export --weights=state_dict.pt --model=cifar_resnet_20 \
      --format=lmc_tf --output=weights.npz

The PyTorch names are those of OpenLTH's models for 'lenet_*' (mnist_lenet_*),
'cifar_resnet_*' and 'cifar_vgg_*', and torchvision's for 'resnet_50'
(torchvision.models.resnet50) and 'inception_v3' (torchvision.models.inception_v3
with aux_logits=True), so that `model.load_state_dict(torch.load(OUTPUT))` takes
the file with strict=True. Beyond renaming and transposing:

- cifar_vgg: OpenLTH's convolutions have a bias, lmc_tf's none. Exported biases
  are 0; imported ones are folded into the following BatchNorm's moving mean,
  the same function in inference (and in training, where BN removes any bias).
- inception_v3: the Keras trunk's BatchNorm layers have no scale. Exported
  scales are 1; importing refuses a state_dict whose trunk scales are not all 1.
- lenet on images with several channels: Keras flattens (H, W, C), PyTorch
  (C, H, W); the first layer's rows are permuted (give --image_shape).
- resnet_50: OpenLTH's imagenet_resnet_50 holds torchvision's ResNet as `model`,
  so its keys are these with 'model.' in front.

The weights convert exactly, and the two networks compute the same function:
tests/reference/test_equivalence.py checks every network's logits and BatchNorm
updates against the PyTorch reference.

BatchNorm `num_batches_tracked` is exported as 0 (lmc_tf keeps no such count;
PyTorch uses it only with momentum=None). The conversion itself
(to_torch_state_dict, from_torch_state_dict) is numpy on both sides; only the
binary's .pt reading and writing imports torch.
"""
import io
import pickle
import re

import lmc_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import flags
import numpy as np

from lmc_tf import cli
from lmc_tf import io_utils
from lmc_tf.errors import UserError
from lmc_tf.models import registry

flags.DEFINE_string('weights', None, 'The weights to convert: an lmc_tf weights.npz (with '
                    '--format=pytorch) or a PyTorch state_dict saved with torch.save (with '
                    '--format=lmc_tf).')
flags.DEFINE_string('model', None, 'The lmc_tf model name of the weights (ModelConfig.name), '
                    "e.g. 'cifar_resnet_20'.")
flags.DEFINE_string('format', None, "The format to write: 'pytorch' (a state_dict for "
                    "torch.load) or 'lmc_tf' (a weights.npz for lmc_tf).")
flags.DEFINE_string('output', None, 'The file to write.')
flags.DEFINE_list('image_shape', None, 'H,W,C of the images, for a LeNet on images other than '
                  '28,28,1 (e.g. 32,32,3), whose first layer is permuted between the Keras and '
                  'PyTorch flatten orders.')
FLAGS = flags.FLAGS

FORMATS = ('pytorch', 'lmc_tf')

# Each entry of a layout maps one lmc_tf layer to one PyTorch module:
#   ('dense', keras, torch): kernel [in, out], bias <-> weight [out, in], bias.
#   ('flatten_dense', keras, torch): a dense layer on flattened images (LeNet's first).
#   ('conv', keras, torch): kernel [h, w, in, out] <-> weight [out, in, h, w].
#   ('conv_bias', keras, torch, keras_bn): the same, and a PyTorch bias (0 on export;
#     folded into keras_bn's moving mean on import).
#   ('bn', keras, torch): gamma, beta, moving_mean, moving_variance <-> weight, bias,
#     running_mean, running_var, num_batches_tracked.
#   ('bn_no_scale', keras, torch): the same without gamma (PyTorch's weight is 1).
_BN_NAMES = (('gamma', 'weight'), ('beta', 'bias'), ('moving_mean', 'running_mean'),
             ('moving_variance', 'running_var'))


def _lenet(hidden):
  names = [f'fc_layers.{i}' for i in range(len(hidden))]
  layout = [('flatten_dense', 'fc1', names[0])]
  layout += [('dense', f'fc{i + 1}', name) for i, name in enumerate(names) if i > 0]
  return layout + [('dense', 'fc_out', 'fc')]


def _conv_bn(keras_conv, keras_bn, torch_conv, torch_bn):
  return [('conv', keras_conv, torch_conv), ('bn', keras_bn, torch_bn)]


def _cifar_resnet(depth, width):
  if depth < 8 or (depth - 2) % 6:
    raise UserError(f'CIFAR ResNet depth {depth} is not 6n+2 (20, 32, 44, 56, 110, ...)')
  blocks = (depth - 2) // 6
  layout = _conv_bn('conv', 'bn', 'conv', 'bn')
  index = 0
  for stage in range(3):
    for block in range(blocks):
      keras, torch = f'stage{stage + 1}_block{block + 1}', f'blocks.{index}'
      layout += _conv_bn(f'{keras}_conv1', f'{keras}_bn1', f'{torch}.conv1', f'{torch}.bn1')
      layout += _conv_bn(f'{keras}_conv2', f'{keras}_bn2', f'{torch}.conv2', f'{torch}.bn2')
      if stage > 0 and block == 0:
        layout += _conv_bn(f'{keras}_shortcut_conv', f'{keras}_shortcut_bn',
                           f'{torch}.shortcut.0', f'{torch}.shortcut.1')
      index += 1
  return layout + [('dense', 'fc_out', 'fc')]


def _cifar_vgg(depth):
  from lmc_tf.models import cifar_vgg  # pylint: disable=g-import-not-at-top
  if depth not in cifar_vgg.PLANS:
    raise UserError(f'no CIFAR VGG of depth {depth}: choose one of {sorted(cifar_vgg.PLANS)}')
  layout, conv = [], 0
  for index, entry in enumerate(cifar_vgg.PLANS[depth]):
    if entry != 'M':
      conv += 1
      layout += [('conv_bias', f'conv{conv}', f'layers.{index}.conv', f'bn{conv}'),
                 ('bn', f'bn{conv}', f'layers.{index}.bn')]
  return layout + [('dense', 'fc_out', 'fc')]


def _resnet_50():
  from lmc_tf.models import resnet50  # pylint: disable=g-import-not-at-top
  layout = _conv_bn('conv', 'bn', 'conv1', 'bn1')
  for stage, (_, blocks) in enumerate(resnet50.STAGES):
    for block in range(blocks):
      keras, torch = f'stage{stage + 1}_block{block + 1}', f'layer{stage + 1}.{block}'
      for i in (1, 2, 3):
        layout += _conv_bn(f'{keras}_conv{i}', f'{keras}_bn{i}', f'{torch}.conv{i}',
                           f'{torch}.bn{i}')
      if block == 0:
        layout += _conv_bn(f'{keras}_shortcut_conv', f'{keras}_shortcut_bn',
                           f'{torch}.downsample.0', f'{torch}.downsample.1')
  return layout + [('dense', 'fc_out', 'fc')]


# torchvision's Inception-v3 BasicConv2d modules (conv + BN), in the order in which Keras'
# InceptionV3 creates its Conv2D/BatchNormalization pairs (conv2d, conv2d_1, ...).
_INCEPTION_BLOCKS = {
    'A': ['branch1x1', 'branch5x5_1', 'branch5x5_2', 'branch3x3dbl_1', 'branch3x3dbl_2',
          'branch3x3dbl_3', 'branch_pool'],
    'B': ['branch3x3', 'branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'],
    'C': ['branch1x1', 'branch7x7_1', 'branch7x7_2', 'branch7x7_3', 'branch7x7dbl_1',
          'branch7x7dbl_2', 'branch7x7dbl_3', 'branch7x7dbl_4', 'branch7x7dbl_5', 'branch_pool'],
    'D': ['branch3x3_1', 'branch3x3_2', 'branch7x7x3_1', 'branch7x7x3_2', 'branch7x7x3_3',
          'branch7x7x3_4'],
    'E': ['branch1x1', 'branch3x3_1', 'branch3x3_2a', 'branch3x3_2b', 'branch3x3dbl_1',
          'branch3x3dbl_2', 'branch3x3dbl_3a', 'branch3x3dbl_3b', 'branch_pool'],
}
_INCEPTION_TRUNK = (['Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'Conv2d_3b_1x1',
                     'Conv2d_4a_3x3'] +
                    [f'{mixed}.{branch}' for mixed, kind in (
                        ('Mixed_5b', 'A'), ('Mixed_5c', 'A'), ('Mixed_5d', 'A'),
                        ('Mixed_6a', 'B'), ('Mixed_6b', 'C'), ('Mixed_6c', 'C'),
                        ('Mixed_6d', 'C'), ('Mixed_6e', 'C'), ('Mixed_7a', 'D'),
                        ('Mixed_7b', 'E'), ('Mixed_7c', 'E'))
                     for branch in _INCEPTION_BLOCKS[kind]])


def _inception_v3():
  layout = []
  for i, module in enumerate(_INCEPTION_TRUNK):
    suffix = f'_{i}' if i else ''
    layout += [('conv', f'conv2d{suffix}', f'{module}.conv'),
               ('bn_no_scale', f'batch_normalization{suffix}', f'{module}.bn')]
  layout += _conv_bn('aux_conv1', 'aux_bn1', 'AuxLogits.conv0.conv', 'AuxLogits.conv0.bn')
  layout += _conv_bn('aux_conv2', 'aux_bn2', 'AuxLogits.conv1.conv', 'AuxLogits.conv1.bn')
  return layout + [('dense', 'aux_fc_out', 'AuxLogits.fc'), ('dense', 'fc_out', 'fc')]


def layout(model_name):
  """The (kind, lmc_tf layer, PyTorch module, ...) entries of a registry model name."""
  registry.check_name(model_name)
  name = str(model_name)
  match = re.fullmatch(r'lenet((?:_\d+)+)', name)
  if match:
    return _lenet([int(h) for h in match.group(1).strip('_').split('_')])
  match = re.fullmatch(r'cifar_resnet_(\d+)(?:_(\d+))?', name)
  if match:
    return _cifar_resnet(int(match.group(1)), int(match.group(2) or 16))
  match = re.fullmatch(r'cifar_vgg_(\d+)', name)
  if match:
    return _cifar_vgg(int(match.group(1)))
  if name == 'resnet_50':
    return _resnet_50()
  return _inception_v3()


def _check_keys(given, used, what, model_name):
  missing, unexpected = sorted(used - set(given)), sorted(set(given) - used)
  if missing or unexpected:
    problems = []
    if missing:
      problems.append(f'{len(missing)} missing ({", ".join(missing[:3])})')
    if unexpected:
      problems.append(f'{len(unexpected)} unexpected ({", ".join(unexpected[:3])})')
    raise UserError(f'the {what} do not fit {model_name!r}: {"; ".join(problems)}: give the '
                    "--model the weights were trained as (the run's ModelConfig.name)")


def _array(values, key, rank, what):
  array = np.asarray(values[key])
  if array.ndim != rank:
    raise UserError(f'{what} {key} has shape {array.shape}, not of rank {rank}: give the '
                    '--model the weights were trained as')
  return array


def _flatten_shape(image_shape, inputs, model_name):
  """(H, W, C) of a LeNet's flattened input of `inputs` values."""
  if image_shape is None:
    if inputs == 28 * 28:
      return (28, 28, 1)
    raise UserError(f"{model_name}'s first layer takes {inputs} inputs: give the image shape "
                    '(--image_shape=H,W,C), as Keras flattens images (H, W, C) and PyTorch '
                    '(C, H, W)')
  try:
    shape = tuple(int(d) for d in image_shape)
  except ValueError as e:
    raise UserError(f'image shape {image_shape} is not three integers H,W,C') from e
  if len(shape) != 3 or int(np.prod(shape)) != inputs:
    raise UserError(f'image shape {shape} is not H,W,C of {inputs} values, the inputs of '
                    f"{model_name}'s first layer: give the shape of the run's images")
  return shape


def _fc_inputs_check(kind, layer, kernel, model_name):
  if kind == 'dense' and layer == 'fc_out' and str(model_name).startswith('cifar_vgg'):
    if kernel.shape[0] != 512:
      raise UserError(f"{model_name}'s fc_out takes {kernel.shape[0]} inputs; OpenLTH's "
                      'cifar_vgg takes 512 (32x32 images): only 32x32 VGGs convert')


def to_torch_state_dict(weights, model_name, image_shape=None):
  """lmc_tf weights (variable path -> array, as in weights.npz) -> PyTorch state_dict arrays.

  Every lmc_tf variable is used once and every PyTorch entry written once; the
  result is numpy (torch.from_numpy each value for load_state_dict).
  """
  out = {}

  def put(key, value):
    if key in out:
      raise ValueError(f'{key} written twice: the layout of {model_name} is wrong')
    out[key] = np.asarray(value, order='C')

  used = set()

  def get(key, rank):
    used.add(key)
    return _array(weights, key, rank, 'lmc_tf variable')

  entries = layout(model_name)
  expected = {f'{e[1]}/{v}' for e in entries for v in _keras_variables(e[0])}
  _check_keys(weights, expected, 'weights', model_name)
  for kind, layer, module, *rest in entries:
    if kind in ('dense', 'flatten_dense'):
      kernel = get(f'{layer}/kernel', 2)
      _fc_inputs_check(kind, layer, kernel, model_name)
      weight = kernel.T
      if kind == 'flatten_dense':
        height, width, channels = _flatten_shape(image_shape, kernel.shape[0], model_name)
        weight = (kernel.reshape(height, width, channels, -1).transpose(3, 2, 0, 1)
                  .reshape(kernel.shape[1], -1))
      put(f'{module}.weight', weight)
      put(f'{module}.bias', get(f'{layer}/bias', 1))
    elif kind in ('conv', 'conv_bias'):
      kernel = get(f'{layer}/kernel', 4)
      put(f'{module}.weight', kernel.transpose(3, 2, 0, 1))
      if kind == 'conv_bias':
        put(f'{module}.bias', np.zeros(kernel.shape[3], kernel.dtype))
    else:
      for keras_name, torch_name in _BN_NAMES:
        if keras_name == 'gamma' and kind == 'bn_no_scale':
          put(f'{module}.weight', np.ones_like(np.asarray(weights[f'{layer}/beta'])))
        else:
          put(f'{module}.{torch_name}', get(f'{layer}/{keras_name}', 1))
      put(f'{module}.num_batches_tracked', np.array(0, np.int64))
  assert used == expected, sorted(used ^ expected)[:3]
  return out


def _keras_variables(kind):
  if kind in ('dense', 'flatten_dense'):
    return ('kernel', 'bias')
  if kind in ('conv', 'conv_bias'):
    return ('kernel',)
  if kind == 'bn':
    return tuple(k for k, _ in _BN_NAMES)
  return tuple(k for k, _ in _BN_NAMES[1:])


def _torch_entries(kind):
  if kind in ('dense', 'flatten_dense', 'conv_bias'):
    return ('weight', 'bias')
  if kind == 'conv':
    return ('weight',)
  return tuple(t for _, t in _BN_NAMES) + ('num_batches_tracked',)


def from_torch_state_dict(state_dict, model_name, image_shape=None):
  """PyTorch state_dict (name -> array or CPU tensor) -> lmc_tf weights (variable path -> array).

  Every PyTorch entry is used once (`num_batches_tracked` may be left out and is
  dropped) and every lmc_tf variable written once.
  """
  state = {key: np.asarray(value) for key, value in state_dict.items()}
  out = {}

  def put(key, value):
    if key in out:
      raise ValueError(f'{key} written twice: the layout of {model_name} is wrong')
    out[key] = np.asarray(value, order='C')

  entries = layout(model_name)
  expected = {f'{e[2]}.{t}' for e in entries for t in _torch_entries(e[0])}
  counters = {k for k in expected if k.endswith('.num_batches_tracked')}
  _check_keys({k for k in state if k not in counters}, expected - counters,
              'PyTorch state_dict entries', model_name)
  conv_biases = {}
  for kind, layer, module, *rest in entries:
    if kind in ('dense', 'flatten_dense'):
      weight = _array(state, f'{module}.weight', 2, 'PyTorch entry')
      kernel = weight.T
      if kind == 'flatten_dense':
        height, width, channels = _flatten_shape(image_shape, weight.shape[1], model_name)
        kernel = (weight.reshape(-1, channels, height, width).transpose(2, 3, 1, 0)
                  .reshape(weight.shape[1], -1))
      _fc_inputs_check(kind, layer, kernel, model_name)
      put(f'{layer}/kernel', kernel)
      put(f'{layer}/bias', _array(state, f'{module}.bias', 1, 'PyTorch entry'))
    elif kind in ('conv', 'conv_bias'):
      put(f'{layer}/kernel', _array(state, f'{module}.weight', 4, 'PyTorch entry')
          .transpose(2, 3, 1, 0))
      if kind == 'conv_bias':
        conv_biases[rest[0]] = _array(state, f'{module}.bias', 1, 'PyTorch entry')
    else:
      for keras_name, torch_name in _BN_NAMES:
        value = _array(state, f'{module}.{torch_name}', 1, 'PyTorch entry')
        if keras_name == 'gamma' and kind == 'bn_no_scale':
          if not np.all(value == 1):
            raise UserError(f'{module}.{torch_name} is not all 1: the BatchNorm layers of '
                            "lmc_tf's Inception-v3 trunk (Keras' InceptionV3) have no scale, so "
                            'only a state_dict whose trunk BatchNorm weights are 1 converts')
          continue
        if keras_name == 'moving_mean' and layer in conv_biases:
          # BN(conv(x) + b) with running mean m is BN(conv(x)) with running mean m - b.
          value = value - conv_biases.pop(layer)
        put(f'{layer}/{keras_name}', value)
  assert not conv_biases, sorted(conv_biases)
  return out


def _load_torch(path):
  """The arrays of a PyTorch state_dict file."""
  import torch  # pylint: disable=g-import-not-at-top

  def decode(data):
    try:
      loaded = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as e:
      raise ValueError(str(e)) from e
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
      raise ValueError('not a state_dict (a dict of tensors): save model.state_dict()')
    return {key: value.detach().cpu().numpy() for key, value in loaded.items()}

  return io_utils.read_decoded(path, decode)


def _save_torch(path, arrays):
  import torch  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  torch.save({key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}, buffer)
  io_utils.write_bytes(path, buffer.getvalue())


def _torch_or_error():
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise UserError('PyTorch is not installed: .venv/bin/python -m pip install --no-deps -r '
                    'requirements-reference.txt') from e


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}: pass everything as --flags')
  for flag in ('weights', 'model', 'format', 'output'):
    if not getattr(FLAGS, flag):
      raise UserError(f'--{flag} is required: e.g. --weights=RUN_DIR/weights.npz '
                      '--model=cifar_resnet_20 --format=pytorch --output=state_dict.pt')
  if FLAGS.format not in FORMATS:
    raise UserError(f'--format={FLAGS.format} is not one of {", ".join(FORMATS)}')
  registry.check_name(FLAGS.model)
  is_npz = FLAGS.weights.endswith('.npz')
  if is_npz != (FLAGS.format == 'pytorch'):
    wanted = 'pytorch' if is_npz else 'lmc_tf'
    raise UserError(f'--weights={FLAGS.weights} is {"an lmc_tf .npz" if is_npz else "not an npz"}'
                    f': convert it with --format={wanted}')
  _torch_or_error()
  if FLAGS.format == 'pytorch':
    arrays = to_torch_state_dict(io_utils.read_npz(FLAGS.weights), FLAGS.model,
                                 FLAGS.image_shape)
    _save_torch(FLAGS.output, arrays)
  else:
    arrays = from_torch_state_dict(_load_torch(FLAGS.weights), FLAGS.model, FLAGS.image_shape)
    io_utils.write_npz(FLAGS.output, arrays)
  print(f'Wrote {len(arrays)} arrays of {FLAGS.model} to {FLAGS.output}')


if __name__ == '__main__':
  app.run(cli.run_main(main))

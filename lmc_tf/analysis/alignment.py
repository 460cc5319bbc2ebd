"""Instability modulo permutation: aligning two networks' hidden units, and REPAIR.

Hidden units can be permuted without changing the function a network computes.
Two copies trained from the same point may therefore sit in the same basin up to
a permutation, and a barrier on the straight line between them may be only that.
Here B is aligned to A (Ainsworth et al., "Git Re-Basin", ICLR 2023) and the
interpolation between A and aligned B is repaired (Jordan et al., "REPAIR",
ICLR 2023). Everything works on weight dicts (variable path -> array, the
contents of weights.npz) and mask dicts (kernel path -> 0/1 array).

Permutation specs (`permutation_spec(model_name)`). A group is one permutation
of the units of one hidden representation: the output channels of a layer,
the matching entries of its bias and of the following BatchNorm's gamma, beta,
moving_mean and moving_variance, and the input channels of every layer that
reads the representation. In a residual network everything added into one
residual stream must share one permutation, so each stage's stream is one
group across all its blocks (with the 1x1 shortcut convolutions and their
BatchNorms mapping one stream to the next where widths change), and each
block has its own inner groups. Specs are declared per architecture (the
naming follows lmc_tf/models/*.py, as lmc_tf/export.py's layouts do) and are
checked against the weights they are used with: every variable must be in the
spec, with consistent group sizes. Covered: LeNet (any hidden sizes), CIFAR
ResNet (any depth and width), CIFAR VGG, ResNet-50; not Inception-v3 (its
concatenated branches would need groups over slices of one axis).

A permutation `perms[group]` is an index array p: the permuted network's unit i
is the original's unit p[i]. `apply_permutation(spec, weights_b, perms)` with
the perms found by a matching method is B aligned to A.

Weight matching (`weight_matching`): maximizes sum over variables of
<W_A, P(W_B)> (minimizes the L2 distance) by coordinate descent over the
groups: for one group, with the others fixed, the best permutation is a linear
assignment problem (scipy.optimize.linear_sum_assignment). The groups are
visited in an order drawn from `seed` in every sweep; a group's permutation
changes only when it strictly improves the objective, and the descent stops
after a sweep without improvement (or `max_iterations` sweeps). Only trainable
variables enter the objective (kernels, biases, gamma, beta), as in Git
Re-Basin; the moving statistics are state and are only permuted along. The
result is coordinate-wise optimal, not necessarily the global optimum.

Activation matching (`activation_matching`): for each group, the Pearson
correlation between A's and B's units over N training examples (and all
spatial positions), of the representation after its ReLU: the output of the
layer (Dense with ReLU, or BatchNorm followed by ReLU), or for a residual
stream each block's output, the correlation matrices of a stream's points
averaged. Each group is then one linear assignment maximizing the summed
correlation. Activations do not depend on B's permutation, so the groups are
independent and the result is the exact optimum of that objective. Each
batch's means and centered second moments are computed in a tf.function
(float32) and the batches pooled in float64.

REPAIR (`repair`): the interpolated network W(a) = (1 - a) A + a B' has
collapsed activation variance. For each repaired layer the goal statistics
are the interpolation of the endpoints' per-channel mean and standard
deviation (measured once with `layer_statistics` on training batches, each
endpoint in inference mode), and the layer is made to produce them:
  - without BatchNorm (LeNet): each hidden Dense layer's pre-activation, layer
    by layer from the input (each measured after the layers below it are
    repaired), by an exact affine correction folded into its kernel and bias:
    z' = (z - mean) * goal_std / std + goal_mean (scaling a kernel's columns keeps
    its pruned weights 0). The output layer is left as is.
  - with BatchNorm (VGG, ResNets): every BatchNorm layer's output (before the
    ReLU or the residual addition), as the REPAIR paper does for BN networks:
    gamma = sign(gamma(a)) * goal_std, beta = goal_mean, then the moving
    statistics are reset on the training batches (train mode, the average of
    the batches' means and variances, as InterpolationConfig.batch_norm =
    'recompute' does), so each BatchNorm normalizes and then rescales to the
    goal. The sign keeps a channel whose interpolated gamma is negative from
    being flipped.
For alphas outside [0, 1] the interpolated standard deviation is clipped at 0.
The returned dict holds every variable, ready for trainer.assign_weights.

Masks. The mask is a property of each copy's weights, so aligning B permutes
B's mask with B's weights (`permute_masks`): pruned weights stay pruned and the
aligned copy computes the same function. A's and aligned B's masks then
differ in general. The interpolated network uses their union
(`interpolation_masks`): stored kernels are 0 outside each copy's mask, so
(1 - a) W_A + a W_B' is exactly the interpolation of the two sparse networks,
is zero outside the union, and is A at a = 0 and B' at a = 1. The
intersection would prune live weights of both endpoints (the endpoints would no
longer be the trained networks), and either copy's mask alone would prune the
other's. The union's density is at least the larger copy's and at most the
sum of both; masked distances between A and B' are taken on the union too.

Batches. The functions that run a model take `images`: an array (or tensor)
of images, split into batches of `batch_size`, or a re-iterable of batches
(a list, a tf.data.Dataset), each batch an image tensor or a tuple whose first
element is the images. They run tf.functions on the default device, outside any
distribution strategy.
"""
import dataclasses
import re
from typing import Dict, Optional, Tuple
import weakref

import numpy as np
from scipy import optimize
import tensorflow as tf

from lmc_tf.errors import UserError
from lmc_tf.models import cifar_vgg
from lmc_tf.models import registry
from lmc_tf.models import resnet50
from lmc_tf.training import trainer

SUPPORTED = ("'lenet_*' (any hidden sizes), 'cifar_resnet_<6n+2>[_<width>]', "
             "'cifar_vgg_11/13/16/19', 'resnet_50'")
_BN_VARIABLES = ('gamma', 'beta', 'moving_mean', 'moving_variance')
_STATE = ('moving_mean', 'moving_variance')  # permuted, but not part of the matching objective


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
  """Which axes of which variables each permutation group acts on.

  axes: variable path -> one entry per axis of the variable: a group name or None.
  flattened: (path, axis) pairs whose axis is a Flatten of (spatial..., channels):
    its size is a multiple of the group's and the group permutes the channel part
    (CIFAR VGG's dense layer at inputs larger than 32x32).
  probes: group -> points where the representation can be read for activation
    matching: (layer name, 'input' | 'output'), read after a ReLU.
  repair_layers: the layers REPAIR corrects, input to output.
  repair_kind: 'batch_norm' (repair_layers are BatchNorm layers) or 'dense'
    (hidden Dense layers' pre-activations).
  """
  model_name: str
  axes: Dict[str, Tuple[Optional[str], ...]]
  flattened: frozenset
  probes: Dict[str, Tuple[Tuple[str, str], ...]]
  repair_layers: Tuple[str, ...]
  repair_kind: str

  @property
  def groups(self):
    """Group -> [(path, axis), ...], in the order of `axes`."""
    groups = {}
    for path, axes in self.axes.items():
      for axis, group in enumerate(axes):
        if group is not None:
          groups.setdefault(group, []).append((path, axis))
    return groups


class _Builder:
  """Collects a spec's entries layer by layer."""

  def __init__(self):
    self.axes, self.flattened, self.probes, self.repair = {}, set(), {}, []

  def dense(self, name, group_in, group_out, flattened=False):
    self.axes[f'{name}/kernel'] = (group_in, group_out)
    self.axes[f'{name}/bias'] = (group_out,)
    if flattened:
      self.flattened.add((f'{name}/kernel', 0))

  def conv(self, name, group_in, group_out):
    self.axes[f'{name}/kernel'] = (None, None, group_in, group_out)

  def batch_norm(self, name, group):
    for variable in _BN_VARIABLES:
      self.axes[f'{name}/{variable}'] = (group,)
    self.repair.append(name)

  def probe(self, group, layer, where):
    self.probes.setdefault(group, []).append((layer, where))

  def spec(self, model_name, repair_kind):
    return PermutationSpec(model_name, dict(self.axes), frozenset(self.flattened),
                           {g: tuple(p) for g, p in self.probes.items()},
                           tuple(self.repair), repair_kind)


def _lenet_spec(name, hidden):
  b = _Builder()
  previous = None
  for i in range(len(hidden)):
    layer = f'fc{i + 1}'
    b.dense(layer, previous, layer)
    b.probe(layer, layer, 'output')  # Dense(activation='relu'): the output is after the ReLU
    b.repair.append(layer)
    previous = layer
  b.dense('fc_out', previous, None)
  return b.spec(name, 'dense')


def _vgg_spec(name, depth):
  b = _Builder()
  previous, index = None, 0
  for entry in cifar_vgg.PLANS[depth]:
    if entry == 'M':
      continue
    index += 1
    group = f'conv{index}'
    b.conv(group, previous, group)
    b.batch_norm(f'bn{index}', group)
    b.probe(group, f'bn{index}', 'output')
    previous = group
  # Average pool and Flatten: (h, w, c) rows, one block of channels per position.
  b.dense('fc_out', previous, None, flattened=True)
  return b.spec(name, 'batch_norm')


def _cifar_resnet_spec(name, depth, width):
  del width  # the spec is the same at any width; sizes come from the weights
  if depth < 8 or (depth - 2) % 6:
    raise UserError(f'CIFAR ResNet depth {depth} is not 6n+2 (20, 32, 44, 56, 110, ...)')
  blocks = (depth - 2) // 6
  b = _Builder()
  # The stem's output is the first stage's stream (that stage has no shortcut convolution).
  b.conv('conv', None, 'stage1')
  b.batch_norm('bn', 'stage1')
  b.probe('stage1', 'stage1_block1_conv1', 'input')
  for stage in range(1, 4):
    stream = f'stage{stage}'
    for block in range(1, blocks + 1):
      layer = f'stage{stage}_block{block}'
      stream_in = f'stage{stage - 1}' if stage > 1 and block == 1 else stream
      inner = f'{layer}_conv1'
      b.conv(f'{layer}_conv1', stream_in, inner)
      b.batch_norm(f'{layer}_bn1', inner)
      b.probe(inner, f'{layer}_bn1', 'output')
      b.conv(f'{layer}_conv2', inner, stream)
      b.batch_norm(f'{layer}_bn2', stream)
      if stream_in != stream:
        b.conv(f'{layer}_shortcut_conv', stream_in, stream)
        b.batch_norm(f'{layer}_shortcut_bn', stream)
      # The block's output (after the addition's ReLU) is the next layer's input; the
      # next stage's first block reads it unpadded through its 1x1 shortcut convolution.
      if block < blocks:
        b.probe(stream, f'stage{stage}_block{block + 1}_conv1', 'input')
      elif stage < 3:
        b.probe(stream, f'stage{stage + 1}_block1_shortcut_conv', 'input')
      else:
        b.probe(stream, 'pool', 'input')
  b.dense('fc_out', 'stage3', None)
  return b.spec(name, 'batch_norm')


def _resnet_50_spec(name):
  b = _Builder()
  b.conv('conv', None, 'stem')
  b.batch_norm('bn', 'stem')
  b.probe('stem', 'stage1_block1_conv1', 'input')  # after the max pool
  stages = len(resnet50.STAGES)
  for stage, (_, blocks) in enumerate(resnet50.STAGES, start=1):
    stream = f'stage{stage}'
    for block in range(1, blocks + 1):
      layer = f'stage{stage}_block{block}'
      if block > 1:
        stream_in = stream
      else:
        stream_in = 'stem' if stage == 1 else f'stage{stage - 1}'
      inner1, inner2 = f'{layer}_conv1', f'{layer}_conv2'
      b.conv(f'{layer}_conv1', stream_in, inner1)
      b.batch_norm(f'{layer}_bn1', inner1)
      b.probe(inner1, f'{layer}_bn1', 'output')
      b.conv(f'{layer}_conv2', inner1, inner2)
      b.batch_norm(f'{layer}_bn2', inner2)
      b.probe(inner2, f'{layer}_bn2', 'output')
      b.conv(f'{layer}_conv3', inner2, stream)
      b.batch_norm(f'{layer}_bn3', stream)
      if block == 1:  # every stage's first block has a projection shortcut
        b.conv(f'{layer}_shortcut_conv', stream_in, stream)
        b.batch_norm(f'{layer}_shortcut_bn', stream)
      if block < blocks:
        b.probe(stream, f'stage{stage}_block{block + 1}_conv1', 'input')
      elif stage < stages:
        b.probe(stream, f'stage{stage + 1}_block1_conv1', 'input')
      else:
        b.probe(stream, 'pool', 'input')
  b.dense('fc_out', f'stage{stages}', None)
  return b.spec(name, 'batch_norm')


def permutation_spec(model_name):
  """The PermutationSpec of a registry model name (UserError for others)."""
  name = str(model_name)
  match = re.fullmatch(r'lenet((?:_\d+)+)', name)
  if match:
    return _lenet_spec(name, [int(h) for h in match.group(1).strip('_').split('_')])
  match = re.fullmatch(r'cifar_resnet_(\d+)(?:_(\d+))?', name)
  if match:
    return _cifar_resnet_spec(name, int(match.group(1)), int(match.group(2) or 16))
  match = re.fullmatch(r'cifar_vgg_(\d+)', name)
  if match:
    depth = int(match.group(1))
    if depth not in cifar_vgg.PLANS:
      raise UserError(f'no CIFAR VGG of depth {depth}: choose one of {sorted(cifar_vgg.PLANS)}')
    return _vgg_spec(name, depth)
  if name == 'resnet_50':
    return _resnet_50_spec(name)
  registry.check_name(name)  # an unknown name: the registry's message lists the known ones
  raise UserError(f'no permutation spec for {name!r}: alignment supports {SUPPORTED}; '
                  'compare this model without alignment')


# Checks.


def group_sizes(spec, weights):
  """Group -> number of units, checked: `weights` must hold exactly the spec's
  variables, and every axis of a group must have the group's size (a multiple of it
  for a flattened axis)."""
  missing = sorted(set(spec.axes) - set(weights))
  unknown = sorted(set(weights) - set(spec.axes))
  if missing or unknown:
    raise UserError(f'the weights do not fit the permutation spec of {spec.model_name!r}: '
                    f'missing {missing[:3]}, unknown {unknown[:3]}: use weights of that model')
  sizes = {}
  for path, axes in spec.axes.items():
    shape = np.shape(weights[path])
    if len(shape) != len(axes):
      raise UserError(f'{path} has shape {shape}, the spec of {spec.model_name!r} expects '
                      f'{len(axes)} axes: use weights of that model')
    for axis, group in enumerate(axes):
      if group is not None and (path, axis) not in spec.flattened:
        if sizes.setdefault(group, shape[axis]) != shape[axis]:
          raise UserError(f'{path} axis {axis} has {shape[axis]} units, other variables of '
                          f'group {group!r} {sizes[group]}: use weights of {spec.model_name!r}')
  for path, axis in spec.flattened:
    size = np.shape(weights[path])[axis]
    if size % sizes[spec.axes[path][axis]]:
      raise UserError(f'{path} axis {axis} has {size} inputs, not a multiple of the '
                      f'{sizes[spec.axes[path][axis]]} channels before it: use weights of '
                      f'{spec.model_name!r}')
  return sizes


def _check_pair(spec, weights_a, weights_b):
  sizes = group_sizes(spec, weights_a)
  group_sizes(spec, weights_b)
  for path in spec.axes:
    if np.shape(weights_a[path]) != np.shape(weights_b[path]):
      raise UserError(f'{path} has shape {np.shape(weights_a[path])} in A and '
                      f'{np.shape(weights_b[path])} in B: align two copies of one model config')
  return sizes


def _check_perms(spec, perms, sizes):
  if set(perms) != set(sizes):
    raise UserError(f'the permutation does not fit the spec of {spec.model_name!r}: missing '
                    f'{sorted(set(sizes) - set(perms))[:3]}, unknown '
                    f'{sorted(set(perms) - set(sizes))[:3]}: use one found for this model')
  for group, n in sizes.items():
    perm = np.asarray(perms[group])
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
      raise UserError(f'perms[{group!r}] is not a permutation of {n} units: use one found '
                      'for this model')


# Applying permutations.


def identity_permutation(spec, weights):
  return {g: np.arange(n) for g, n in group_sizes(spec, weights).items()}


def random_permutation(spec, weights, seed):
  """A permutation drawn from `seed` (groups in sorted order): for tests and checks."""
  rng = np.random.default_rng(seed)
  return {g: rng.permutation(n) for g, n in sorted(group_sizes(spec, weights).items())}


def _take(array, perm, axis):
  """`array` with `perm` applied along `axis`; on a longer (flattened) axis, to the
  trailing channel part of each block of len(perm)."""
  n, size = len(perm), array.shape[axis]
  if size == n:
    return np.take(array, perm, axis=axis)
  shape = array.shape
  blocks = array.reshape(shape[:axis] + (size // n, n) + shape[axis + 1:])
  return np.take(blocks, perm, axis=axis + 1).reshape(shape)


def _permuted(spec, perms, path, array, skip_axis=None):
  for axis, group in enumerate(spec.axes[path]):
    if group is not None and axis != skip_axis:
      array = _take(array, perms[group], axis)
  return array


def apply_permutation(spec, weights, perms):
  """A permuted copy of `weights` (every variable; the same function as `weights`)."""
  _check_perms(spec, perms, group_sizes(spec, weights))
  return {path: _permuted(spec, perms, path, np.asarray(weights[path]))
          for path in weights}


def permute_masks(spec, masks, perms):
  """A permuted copy of `masks` (kernel path -> 0/1 array), to go with
  apply_permutation(spec, weights, perms): each mask moves with its kernel."""
  unknown = sorted(set(masks) - set(spec.axes))
  if unknown:
    raise UserError(f'masks {unknown[:3]} are not variables of {spec.model_name!r}: use '
                    'masks of that model')
  for path, mask in masks.items():
    if len(np.shape(mask)) != len(spec.axes[path]):
      raise UserError(f'the mask of {path} has shape {np.shape(mask)}: use masks of '
                      f'{spec.model_name!r}')
  for group, n in _mask_group_sizes(spec, masks).items():
    if group in perms and len(perms[group]) != n:
      raise UserError(f'the mask of group {group!r} has {n} units, the permutation '
                      f'{len(perms[group])}: use masks and permutation of one model')
  return {path: _permuted(spec, perms, path, np.asarray(mask)) for path, mask in masks.items()}


def _mask_group_sizes(spec, masks):
  sizes = {}
  for path, mask in masks.items():
    for axis, group in enumerate(spec.axes[path]):
      if group is not None and (path, axis) not in spec.flattened:
        sizes[group] = np.shape(mask)[axis]
  return sizes


def interpolation_masks(masks_a, masks_b):
  """The mask of the network interpolated between two copies with these masks: their
  union (see the module docstring)."""
  if masks_a is None or masks_b is None:  # an unpruned copy: the union keeps everything
    return None
  if set(masks_a) != set(masks_b):
    raise UserError('the two masks cover different layers: use masks of one model config')
  union = {}
  for path in masks_a:
    if np.shape(masks_a[path]) != np.shape(masks_b[path]):
      raise UserError(f'the masks of {path} have shapes {np.shape(masks_a[path])} and '
                      f'{np.shape(masks_b[path])}: use masks of one model config')
    union[path] = np.maximum(masks_a[path], masks_b[path]).astype(np.float32)
  return union


# Weight matching.


def _unit_rows(array, axis, n):
  """`array` as an [n, -1] matrix whose row i holds everything of unit i along `axis`."""
  shape = array.shape
  if shape[axis] != n:  # a flattened axis: its channel part
    array = array.reshape(shape[:axis] + (shape[axis] // n, n) + shape[axis + 1:])
    axis += 1
  return np.moveaxis(array, axis, 0).reshape(n, -1)


def weight_matching(spec, weights_a, weights_b, seed=0, max_iterations=100):
  """The permutation of B that maximizes sum <W_A, P(W_B)> over the trainable variables,
  by coordinate descent (module docstring). Returns group -> index array; deterministic
  for the same inputs and seed."""
  sizes = _check_pair(spec, weights_a, weights_b)
  if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or \
      max_iterations < 1:
    raise UserError(f'max_iterations = {max_iterations!r}: give a positive integer')
  # float64: the objective sums millions of products, and ties must not depend on rounding.
  matched = [p for p in spec.axes if p.rsplit('/', 1)[-1] not in _STATE]
  a = {p: np.asarray(weights_a[p], np.float64) for p in matched}
  b = {p: np.asarray(weights_b[p], np.float64) for p in matched}
  groups = {g: [(p, axis) for p, axis in entries if p in a]
            for g, entries in spec.groups.items()}
  perms = {g: np.arange(n) for g, n in sizes.items()}
  # A's side of each group's products never changes.
  rows_a = {g: [tf.constant(_unit_rows(a[p], axis, sizes[g])) for p, axis in entries]
            for g, entries in groups.items()}
  names = sorted(sizes)
  rng = np.random.default_rng(seed)
  for _ in range(max_iterations):
    improved = False
    for index in rng.permutation(len(names)):
      group = names[index]
      n = sizes[group]
      # similarity[i, j]: A's unit i against B's unit j, B's other groups permuted.
      similarity = np.zeros((n, n))
      for (path, axis), rows in zip(groups[group], rows_a[group]):
        other = _unit_rows(_permuted(spec, perms, path, b[path], skip_axis=axis), axis, n)
        # TensorFlow's matmul, not numpy's: numpy's OpenBLAS threads wait on each other on
        # a busy CPU (a 300x784 product took 225 ms against TensorFlow's 7 ms there).
        similarity += tf.matmul(rows, other, transpose_b=True).numpy()
      _, columns = optimize.linear_sum_assignment(similarity, maximize=True)
      old = similarity[np.arange(n), perms[group]].sum()
      new = similarity[np.arange(n), columns].sum()
      # Only a strict improvement (beyond rounding) moves: equal-valued alternatives
      # would otherwise cycle, and the stopping rule is a sweep without one.
      if new > old + 1e-12 * max(1.0, abs(old)):
        perms[group] = columns
        improved = True
    if not improved:
      break
  return perms


def weight_matching_objective(spec, weights_a, weights_b, perms):
  """sum <W_A, P(W_B)> over the trainable variables: what weight_matching maximizes."""
  total = 0.0
  for path in spec.axes:
    if path.rsplit('/', 1)[-1] in _STATE:
      continue
    permuted = _permuted(spec, perms, path, np.asarray(weights_b[path], np.float64))
    total += float(np.vdot(np.asarray(weights_a[path], np.float64), permuted))
  return total


# Running models: per-channel statistics of chosen tensors, in tf.functions.


def _image_batches(images, batch_size):
  if isinstance(images, (np.ndarray, tf.Tensor)):
    if len(images) == 0:
      raise UserError('no images given: pass training images for the statistics')
    for start in range(0, len(images), batch_size):
      yield images[start:start + batch_size]
    return
  for batch in images:
    yield batch[0] if isinstance(batch, (tuple, list)) else batch


# model -> {points: _Probe}: a probe's tf.function is traced once per model, not per call
# (REPAIR runs one at every alpha).
_PROBES = weakref.WeakKeyDictionary()


class _Probe:
  """Tensors of a model read at `points` ((layer, 'input' | 'output' | 'pre_activation')),
  each as a [rows, channels] matrix; 'pre_activation' is a Dense layer's input times
  its (current) kernel plus bias."""

  def __init__(self, model, points):
    self.points = points
    tensors = []
    for layer_name, where in points:
      try:
        layer = model.get_layer(layer_name)
      except ValueError:
        raise UserError(f'the model has no layer {layer_name!r}: use the model of the '
                        'permutation spec') from None
      tensors.append(layer.output if where == 'output' else layer.input)
    self.net = tf.keras.Model(model.inputs, tensors)
    variables = trainer.weight_variables(model)
    self.dense = [(variables[f'{layer}/kernel'], variables[f'{layer}/bias'])
                  if where == 'pre_activation' else None for layer, where in points]
    self.moments = tf.function(self._moments, reduce_retracing=True)

  def matrices(self, images, training=False, relu=False):
    outputs = self.net(images, training=training)
    if not isinstance(outputs, (list, tuple)):
      outputs = [outputs]
    result = []
    for output, dense in zip(outputs, self.dense):
      if output.dtype in (tf.bfloat16, tf.float16):  # a mixed-precision model: sums in float32
        output = tf.cast(output, tf.float32)
      if dense is not None:
        output = tf.matmul(tf.cast(output, dense[0].dtype), dense[0]) + dense[1]
      if relu:
        output = tf.nn.relu(output)
      result.append(tf.reshape(output, [-1, output.shape[-1]]))
    return result

  def _moments(self, images, training):
    result = []
    for x in self.matrices(images, training):
      mean, centered = _centered(x)
      result.append((tf.shape(x)[0], mean, tf.reduce_sum(centered * centered, 0)))
    return result


def _centered(x):
  """(mean, x - mean) over the rows. Each batch's moments are taken about its own mean,
  in float32 (the float64 cast of every activation cost as much as the forward pass),
  and batches are pooled in float64 (_pooled): no sum of squares cancels."""
  mean = tf.reduce_mean(x, 0)
  return mean, x - mean


def _probe(model, points):
  points = tuple(points)
  try:
    cache = _PROBES.setdefault(model, {})
  except TypeError:  # a model that takes no weak reference: no cache
    cache = {}
  if points not in cache:
    cache[points] = _Probe(model, points)
  return cache[points]


def _per_batch(function, images, batch_size):
  """function(batch) for each batch, its nested tensors as float64 numpy arrays."""
  results = [tf.nest.map_structure(lambda t: np.asarray(t, np.float64),
                                   function(tf.convert_to_tensor(batch)))
             for batch in _image_batches(images, batch_size)]
  if not results:
    raise UserError('no images given: pass training images for the statistics')
  return results


def _pooled(counts, means, squares):
  """(count, mean, sum of squared deviations) of all rows, from each batch's count, mean
  and sum of squared deviations about its own mean (Chan et al.'s pairwise update)."""
  counts = np.asarray(counts, np.float64)[:, None]
  means = np.asarray(means)
  total = counts.sum()
  mean = (counts * means).sum(0) / total
  return total, mean, np.sum(squares, 0) + (counts * (means - mean)**2).sum(0)


def _mean_std(batches, index):
  """(mean, std) per channel over all rows of all batches, of point `index`."""
  total, mean, squares = _pooled(*zip(*(batch[index] for batch in batches)))
  return mean, np.sqrt(squares / total)


# Activation matching.

# model_a -> model_b -> {points: tf.function}: traced once per pair of models.
_JOINT = weakref.WeakKeyDictionary()


def _joint_moments(model_a, model_b, points):
  """A tf.function of a batch: per point, the count, both models' means and centered
  sums of squares, and the centered cross products [n, n] (after the ReLU)."""
  probe_a, probe_b = _probe(model_a, points), _probe(model_b, points)

  def moments(batch):
    result = []
    for x, y in zip(probe_a.matrices(batch, relu=True), probe_b.matrices(batch, relu=True)):
      (mean_x, x), (mean_y, y) = _centered(x), _centered(y)
      result.append((tf.shape(x)[0], mean_x, mean_y, tf.reduce_sum(x * x, 0),
                     tf.reduce_sum(y * y, 0), tf.matmul(x, y, transpose_a=True)))
    return result

  try:
    cache = _JOINT.setdefault(model_a, weakref.WeakKeyDictionary()).setdefault(model_b, {})
  except TypeError:  # a model that takes no weak reference: no cache
    cache = {}
  if points not in cache:
    cache[points] = tf.function(moments, reduce_retracing=True)
  return cache[points]


def activation_correlations(spec, model_a, model_b, images, batch_size=256, weights_a=None,
                            weights_b=None):
  """Group -> [n, n] float64 matrix: Pearson correlation of A's unit i with B's unit j
  (after the ReLU) over the images and all positions, averaged over the group's points.
  model_a and model_b: two Keras models of the spec's architecture (masked or not; e.g.
  from trainer.build_model) holding A and B, or overwritten with weights_a and
  weights_b when those are given."""
  for model, weights in ((model_a, weights_a), (model_b, weights_b)):
    if weights is not None:
      group_sizes(spec, weights)
      trainer.assign_weights(model, weights)
  _check_pair(spec, trainer.weights_dict(model_a), trainer.weights_dict(model_b))
  groups = sorted(spec.probes)
  points = tuple(point for group in groups for point in spec.probes[group])
  batches = _per_batch(_joint_moments(model_a, model_b, points), images, batch_size)
  correlations = {}
  index = 0
  for group in groups:
    matrices = []
    for _ in spec.probes[group]:
      counts, means_a, means_b, squares_a, squares_b, cross = zip(
          *(batch[index] for batch in batches))
      index += 1
      _, mean_a, squares_a = _pooled(counts, means_a, squares_a)
      _, mean_b, squares_b = _pooled(counts, means_b, squares_b)
      weights = np.asarray(counts, np.float64)[:, None, None]
      # The cross term pools as the squares do: within batches plus between batch means.
      shift_a = np.asarray(means_a) - mean_a
      shift_b = np.asarray(means_b) - mean_b
      covariance = np.sum(cross, 0) + (weights * shift_a[:, :, None] * shift_b[:, None, :]).sum(0)
      scale = np.sqrt(np.outer(squares_a, squares_b))
      # A unit that never varies (dead) correlates with nothing: 0, not nan.
      matrices.append(np.divide(covariance, scale, out=np.zeros_like(covariance),
                                where=scale > 1e-12 * max(1.0, scale.max())))
    correlations[group] = np.mean(matrices, axis=0)
  return correlations


def activation_matching(spec, model_a, model_b, images, batch_size=256, weights_a=None,
                        weights_b=None):
  """The permutation of B maximizing, per group, the summed correlation of matched
  units (activation_correlations, same arguments). Returns group -> index array;
  deterministic."""
  correlations = activation_correlations(spec, model_a, model_b, images, batch_size,
                                         weights_a, weights_b)
  perms = {}
  for group, correlation in correlations.items():
    _, columns = optimize.linear_sum_assignment(correlation, maximize=True)
    perms[group] = columns
  return perms


# REPAIR.


def _repair_points(spec):
  where = 'output' if spec.repair_kind == 'batch_norm' else 'pre_activation'
  return [(layer, where) for layer in spec.repair_layers]


def layer_statistics(spec, model, weights, images, batch_size=256):
  """Layer -> (mean, std) per channel of each REPAIR layer's output (BatchNorm) or
  pre-activation (Dense) of `weights`, in inference mode over `images`: an endpoint's
  statistics, to compute once and pass to `repair`. `model` (a Keras model of the
  spec's architecture, masked or not) is overwritten with `weights`."""
  group_sizes(spec, weights)
  trainer.assign_weights(model, weights)
  probe = _probe(model, _repair_points(spec))
  batches = _per_batch(lambda batch: probe.moments(batch, False), images, batch_size)
  return {layer: _mean_std(batches, i) for i, layer in enumerate(spec.repair_layers)}


def repair(spec, model, weights_a, weights_b, alpha, images, stats_a=None, stats_b=None,
           batch_size=256):
  """The REPAIRed weights of (1 - alpha) A + alpha B (B already aligned to A): a dict of
  every variable (module docstring). stats_a, stats_b: layer_statistics of the
  endpoints (computed here when None). `model` is overwritten and left holding the
  result."""
  _check_pair(spec, weights_a, weights_b)
  alpha = float(alpha)
  if stats_a is None:
    stats_a = layer_statistics(spec, model, weights_a, images, batch_size)
  if stats_b is None:
    stats_b = layer_statistics(spec, model, weights_b, images, batch_size)
  goals = {}
  for layer in spec.repair_layers:
    (mean_a, std_a), (mean_b, std_b) = stats_a[layer], stats_b[layer]
    goals[layer] = ((1 - alpha) * mean_a + alpha * mean_b,
                    np.maximum((1 - alpha) * std_a + alpha * std_b, 0.0))
  weights = {path: ((1 - alpha) * np.asarray(weights_a[path], np.float64) +
                    alpha * np.asarray(weights_b[path], np.float64))
             for path in weights_a}
  if spec.repair_kind == 'batch_norm':
    for layer, (mean, std) in goals.items():
      sign = np.where(weights[f'{layer}/gamma'] < 0, -1.0, 1.0)
      weights[f'{layer}/gamma'] = sign * std
      weights[f'{layer}/beta'] = mean
    trainer.assign_weights(model, _float32(weights))
    # Reset: each BatchNorm's moving statistics become the average over the batches of
    # its input's batch mean and variance, every layer in train mode (batch statistics).
    probe = _probe(model, [(layer, 'input') for layer in spec.repair_layers])
    batches = _per_batch(lambda batch: probe.moments(batch, True), images, batch_size)
    for i, layer in enumerate(spec.repair_layers):
      counts, means, squares = zip(*(batch[i] for batch in batches))
      weights[f'{layer}/moving_mean'] = np.mean(means, axis=0)
      weights[f'{layer}/moving_variance'] = np.mean(
          [square / count for square, count in zip(squares, counts)], axis=0)
  else:
    for layer, (goal_mean, goal_std) in goals.items():
      # Each layer is measured with the layers below it already repaired.
      trainer.assign_weights(model, _float32(weights))
      probe = _probe(model, [(layer, 'pre_activation')])
      mean, std = _mean_std(
          _per_batch(lambda batch: probe.moments(batch, False), images, batch_size), 0)
      # A unit constant on the data (std 0) cannot be rescaled: only its mean moves.
      scale = np.divide(goal_std, std, out=np.ones_like(std), where=std > 1e-12)
      weights[f'{layer}/kernel'] = weights[f'{layer}/kernel'] * scale
      weights[f'{layer}/bias'] = (weights[f'{layer}/bias'] - mean) * scale + goal_mean
  weights = _float32(weights)
  trainer.assign_weights(model, weights)
  return weights


def _float32(weights):
  return {path: np.asarray(value, np.float32) for path, value in weights.items()}

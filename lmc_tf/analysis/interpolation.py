"""Evaluating W(a) = (1 - a) W1 + a W2 for many a in one pass over the data.

The batched evaluator preprocesses each batch once and evaluates every alpha
on it inside one tf.function. When the first weighted layer (a Dense or
Conv2D) is reached from the input through parameter-free layers only, it is
linear in its kernel, so it computes X W1 and X (W2 - W1) once per batch and
forms X W(a) = X W1 + a X (W2 - W1) for every alpha; only the rest of the
network runs per alpha. The naive evaluator assigns W(a) and evaluates the
model once per alpha; it is the reference, and the path used under
multi-replica strategies and when BatchNorm statistics are recomputed.
"""
import numpy as np
import tensorflow as tf

from lmc_tf.pruning import masking
from lmc_tf.training import loop
from lmc_tf.training import trainer


def _first_layer_split(model):
  """(first MaskedLayer, head model, tail model), or None when the fast path does not apply."""
  layers = masking.masked_layers(model)
  if not layers:
    return None
  first = layers[0]
  try:
    head = tf.keras.Model(model.inputs, first.input)
    tail = tf.keras.Model(first.output, model.outputs)
  except (ValueError, TypeError, AttributeError):
    return None
  if head.weights:
    return None
  return first, head, tail


class Interpolator:
  """Evaluates interpolations of two weight dicts on a split of a dataset."""

  def __init__(self, model, strategy=None):
    self.model = model
    self.strategy = strategy or tf.distribute.get_strategy()
    self.variables = trainer.weight_variables(model)
    self.split = _first_layer_split(model)
    self._batched = tf.function(self._batched_curve)
    self._logits = tf.function(lambda x: loop.split_outputs(self.model(x, training=False))[0])
    self.evaluator = loop.Evaluator(model, self.strategy)

  def assign(self, weights_a, weights_b, alpha):
    for path, variable in self.variables.items():
      variable.assign((1.0 - alpha) * weights_a[path] + alpha * weights_b[path])

  # The batched path.

  def _batched_curve(self, dataset, alphas, start, delta):
    count = tf.shape(alphas)[0]
    loss_sums = tf.zeros([count])
    correct_sums = tf.zeros([count])
    for images, labels, weights in dataset:
      losses, correct = self._batch_sums(images, labels, weights, alphas, start, delta)
      loss_sums += losses
      correct_sums += correct
    return loss_sums, correct_sums

  def _batch_sums(self, images, labels, weights, alphas, start, delta):
    """Per-alpha sums of the loss and of correct predictions on one batch."""
    paths = list(self.variables)
    if self.split is not None:
      first, head, tail = self.split
      kernel_index = paths.index(first.kernel_path)
      bias = first.layer.bias if first.layer.use_bias else None
      inputs = head(images, training=False)
      base = first.linear(inputs, start[kernel_index])
      slope = first.linear(inputs, delta[kernel_index])
    count = tf.shape(alphas)[0]
    losses = tf.TensorArray(tf.float32, size=count)
    correct = tf.TensorArray(tf.float32, size=count)
    for i in tf.range(count):
      alpha = alphas[i]
      for j, path in enumerate(paths):
        self.variables[path].assign(start[j] + alpha * delta[j])
      if self.split is None:
        outputs = self.model(images, training=False)
      else:
        outputs = tail(first.finish(base + alpha * slope, bias), training=False)
      logits = loop.split_outputs(outputs)[0]
      hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
      losses = losses.write(i, tf.reduce_sum(loop.cross_entropy(labels, logits) * weights))
      correct = correct.write(i, tf.reduce_sum(hits * weights))
    return losses.stack(), correct.stack()

  def curve(self, weights_a, weights_b, alphas, data, split, method='auto', bn_data=None):
    """{'loss': [...], 'error': [...]} of W(a) for each alpha on `split`.

    `bn_data`: recompute BatchNorm statistics on these training batches for each
    alpha (forces the naive path). Leaves the model holding W(alphas[-1]).
    """
    alphas = np.asarray(alphas, np.float32)
    if method == 'auto':
      single = self.strategy.num_replicas_in_sync == 1
      method = 'batched' if single and bn_data is None else 'naive'
    if method == 'naive':
      losses, errors = [], []
      for alpha in alphas:
        self.assign(weights_a, weights_b, float(alpha))
        if bn_data is not None:
          self.recompute_batch_norm(bn_data)
        result = self.evaluator.evaluate(data, split)
        losses.append(result['loss'])
        errors.append(result['error'])
      return {'loss': losses, 'error': errors}
    dataset, count = loop.eval_dataset(data, split, self.strategy)
    paths = list(self.variables)
    start = [tf.constant(weights_a[p], tf.float32) for p in paths]
    delta = [tf.constant(np.asarray(weights_b[p], np.float32) - weights_a[p]) for p in paths]
    loss_sums, correct_sums = self._batched(dataset, tf.constant(alphas), start, delta)
    return {'loss': [float(v) / count for v in loss_sums.numpy()],
            'error': [1.0 - float(v) / count for v in correct_sums.numpy()]}

  def recompute_batch_norm(self, batches):
    """Replaces BatchNorm running statistics by their averages over `batches` (train mode)."""
    layers = [l for l in self.model.submodules if isinstance(l, tf.keras.layers.BatchNormalization)]
    if not layers:
      return
    for layer in layers:
      layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
      layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
    momenta = [layer.momentum for layer in layers]
    for step, (images, _) in enumerate(batches):
      # A cumulative average: the step-th batch gets weight 1 / (step + 1).
      for layer in layers:
        layer.momentum = step / (step + 1.0)
      self.model(images, training=True)
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum

  def per_example(self, weights, data, split):
    """(per-example losses, predicted classes, labels) of `weights` on `split`, padding dropped."""
    trainer.assign_weights(self.model, weights)
    dataset, count = loop.eval_dataset(data, split, self.strategy)
    losses, predictions, all_labels = [], [], []
    for images, labels, _ in dataset:
      logits = self._logits(images)
      losses.append(loop.cross_entropy(labels, logits).numpy())
      predictions.append(tf.argmax(logits, -1, output_type=tf.int32).numpy())
      all_labels.append(labels.numpy())
    return tuple(np.concatenate(parts)[:count] for parts in (losses, predictions, all_labels))

"""Evaluating W(a) = (1 - a) W1 + a W2 for many a in one pass over the data.

The batched evaluator preprocesses each batch once and evaluates every alpha
on it inside one tf.function. When the first weighted layer (a Dense or
Conv2D) is reached from the input through parameter-free layers only, it is
linear in its kernel, so it computes X W1 and X (W2 - W1) once per batch and
forms X W(a) = X W1 + a X (W2 - W1) for every alpha; only the rest of the
network runs per alpha. The naive evaluator assigns W(a) and evaluates the
model once per alpha; it is the reference, and the path used when BatchNorm
statistics are recomputed. Both run under any strategy: each replica evaluates
its slice of the batch into its own sums, which are added up once, when read.
The batched path forms W(a) on each device from device copies of W1 and
W2 - W1, so no weights cross between host and devices per alpha or batch; the
naive path assigns W(a) once per alpha.
"""
import numpy as np
import tensorflow as tf

from lmc_tf.models import masking
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


def _assign_interpolation(variable, start, delta, alpha):
  return variable.assign(start + alpha * delta)


class Interpolator:
  """Evaluates interpolations of two weight dicts on a split of a dataset."""

  def __init__(self, model, strategy=None, jit_compile=False):
    self.model = model
    self.strategy = strategy or tf.distribute.get_strategy()
    self.variables = trainer.weight_variables(model)
    self.split = _first_layer_split(model)
    self._start = self._delta = None  # device copies of W1 and W2 - W1
    self._sums = {}  # number of alphas -> per-replica [loss sums, hit sums]
    self._layer_terms = loop.compiled(self._first_layer_terms, jit_compile)
    self._alpha_step = loop.compiled(self._add_alpha_sums, jit_compile)
    self._replica_predictions = loop.compiled(self._replica_predictions_fn, jit_compile)
    self._batched = tf.function(self._batched_curve)
    self._predictions = tf.function(self._gathered_predictions)
    self._train_mode_call = tf.function(self._replica_train_mode_call)
    self.evaluator = loop.Evaluator(model, self.strategy, jit_compile)

  def assign(self, weights_a, weights_b, alpha):
    for path, variable in self.variables.items():
      variable.assign((1.0 - alpha) * weights_a[path] + alpha * weights_b[path])

  # The batched path.

  def _batched_curve(self, dataset, alphas, sums):
    """Adds, on each replica, the summed loss and hits of W(alphas[i]) on its slices to
    sums[0][i] and sums[1][i]. W(a) is formed on each device from its own copies of W1
    and W2 - W1 (`_start`, `_delta`): nothing crosses between host and devices per alpha."""
    count = tf.shape(alphas)[0]
    paths = list(self.variables)
    formed = range(len(paths))  # the variables W(alpha) is formed in, per batch and alpha
    if self.split is not None:
      first_kernel = paths.index(self.split[0].kernel_path)
      # The rest of the network does not read the first kernel (its terms come from W1 and
      # W2 - W1): forming it would be most of the work for LeNet (235K of its 266K weights).
      formed = [j for j in formed if j != first_kernel]
    for images, labels, weights in dataset:
      if self.split is not None:
        inputs = self.strategy.run(self._layer_terms, args=(
            images, self._start[first_kernel], self._delta[first_kernel]))
      else:
        inputs = images
      for i in tf.range(count):
        alpha = alphas[i]
        for j in formed:
          self.strategy.extended.update(self.variables[paths[j]], _assign_interpolation,
                                        args=(self._start[j], self._delta[j], alpha))
        self.strategy.run(self._alpha_step, args=(inputs, labels, weights, alpha,
                                                      tf.one_hot(i, count), sums))

  def _add_alpha_sums(self, inputs, labels, weights, alpha, at_alpha, sums):
    loss, hits = self._alpha_sums(inputs, labels, weights, alpha)
    sums[0].assign_add(at_alpha * loss)
    sums[1].assign_add(at_alpha * hits)

  def _endpoint_variables(self, weights_a, weights_b):
    """Puts W1 and W2 - W1 into device variables (created once), for `_batched_curve`."""
    paths = list(self.variables)
    if self._start is None:
      with self.strategy.scope():
        self._start = [tf.Variable(tf.zeros_like(self.variables[p]), trainable=False)
                       for p in paths]
        self._delta = [tf.Variable(tf.zeros_like(self.variables[p]), trainable=False)
                       for p in paths]
    for j, path in enumerate(paths):
      self._start[j].assign(weights_a[path])
      self._delta[j].assign(np.asarray(weights_b[path], np.float32) - weights_a[path])

  def _alpha_sum_variables(self, count):
    """Per-replica sums of loss and hits for `count` alphas: summed over replicas when read."""
    if count not in self._sums:
      with self.strategy.scope():
        self._sums[count] = [tf.Variable(
            tf.zeros([count]), trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM) for _ in range(2)]
    for variable in self._sums[count]:
      variable.assign(tf.zeros([count]))
    return self._sums[count]

  def _first_layer_terms(self, images, kernel_start, kernel_delta):
    """(X W1, X (W2 - W1)) of the first weighted layer, on one replica's batch."""
    first, head, _ = self.split
    inputs = head(images, training=False)
    return first.linear(inputs, kernel_start), first.linear(inputs, kernel_delta)

  def _alpha_sums(self, inputs, labels, weights, alpha):
    """Summed loss and correct predictions of W(alpha) (already assigned) on one replica."""
    if self.split is None:
      outputs = self.model(inputs, training=False)
    else:
      first, _, tail = self.split
      base, slope = inputs
      bias = first.layer.bias if first.layer.use_bias else None
      outputs = tail(first.finish(base + alpha * slope, bias), training=False)
    logits = loop.split_outputs(outputs)[0]
    hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    return tf.reduce_sum(loop.cross_entropy(labels, logits) * weights), tf.reduce_sum(hits * weights)

  def curve(self, weights_a, weights_b, alphas, data, split, method='auto', bn_data=None):
    """{'loss': [...], 'error': [...]} of W(a) for each alpha on `split`.

    `bn_data`: recompute BatchNorm statistics on these training batches for each
    alpha (forces the naive path). Leaves the model holding W(alphas[-1]).
    """
    alphas = np.asarray(alphas, np.float32)
    if method == 'auto':
      method = 'batched' if bn_data is None else 'naive'
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
    self._endpoint_variables(weights_a, weights_b)
    sums = self._alpha_sum_variables(len(alphas))
    self._batched(dataset, tf.constant(alphas), sums)
    if self.split is not None:  # the model holds W(alphas[-1]) whole, as the naive path leaves it
      path = self.split[0].kernel_path
      self.variables[path].assign((1.0 - alphas[-1]) * weights_a[path] +
                                  alphas[-1] * weights_b[path])
    loss_sums, correct_sums = (variable.read_value().numpy() for variable in sums)
    return {'loss': [float(v) / count for v in loss_sums],
            'error': [1.0 - float(v) / count for v in correct_sums]}

  def evaluate(self, weights, data, split, bn_data=None):
    """{'loss', 'error'} of one weight dict on `split`, as the naive path evaluates each
    alpha (e.g. a REPAIRed network, which is not on the straight line). `bn_data`:
    recompute BatchNorm statistics first. Leaves the model holding `weights`."""
    trainer.assign_weights(self.model, weights)
    if bn_data is not None:
      self.recompute_batch_norm(bn_data)
    result = self.evaluator.evaluate(data, split)
    return {'loss': result['loss'], 'error': result['error']}

  def recompute_batch_norm(self, batches):
    """Replaces BatchNorm running statistics by their averages over `batches` (train mode).

    Under a strategy, `batches` are distributed and each replica computes its own
    slices' statistics; reading them averages over replicas (so the spread between
    the slices' means is left out, as BatchNorm's own training statistics do).
    """
    layers = [l for l in self.model.submodules if isinstance(l, tf.keras.layers.BatchNormalization)]
    if not layers:
      return
    momenta = [layer.momentum for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]
    count = 0
    try:
      for layer in layers:
        layer.momentum = 0.0  # from zeros, a train-mode call leaves the batch's statistics
      for images, _ in batches:
        for layer in layers:
          layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
          layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
        self._train_mode_call(images)
        for total, layer in zip(sums, layers):
          total[0] += layer.moving_mean.numpy()
          total[1] += layer.moving_variance.numpy()
        count += 1
    finally:
      for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    for (mean, variance), layer in zip(sums, layers):
      layer.moving_mean.assign(mean / count)
      layer.moving_variance.assign(variance / count)

  def _replica_train_mode_call(self, images):
    self.strategy.run(lambda x: self.model(x, training=True), args=(images,))

  def _replica_predictions_fn(self, images, labels, weights):
    logits = loop.split_outputs(self.model(images, training=False))[0]
    return (loop.cross_entropy(labels, logits), tf.argmax(logits, -1, output_type=tf.int32),
            labels, weights)

  def _gathered_predictions(self, images, labels, weights):
    """(losses, predictions, labels, weights) of a batch, gathered from all replicas."""
    per_replica = self.strategy.run(self._replica_predictions, args=(images, labels, weights))
    return [self.strategy.gather(t, axis=0) for t in per_replica]

  def per_example(self, weights, data, split, bn_data=None):
    """(per-example losses, predicted classes, labels) of `weights` on `split`, padding dropped.

    The order is the same for every call on the same data and strategy, so two
    networks' results compare example by example. `bn_data`: recompute BatchNorm
    statistics first, as `curve` does, so the endpoints match the curve's.
    """
    trainer.assign_weights(self.model, weights)
    if bn_data is not None:
      self.recompute_batch_norm(bn_data)
    dataset, _ = loop.eval_dataset(data, split, self.strategy)
    parts = []
    for batch in dataset:
      parts.append([t.numpy() for t in self._predictions(*batch)])
    losses, predictions, labels, example_weights = (np.concatenate(p) for p in zip(*parts))
    real = example_weights > 0
    return losses[real], predictions[real], labels[real]

"""Compiled training and evaluation steps that run unchanged under any tf.distribute strategy.

The train loop runs many steps inside one tf.function (as Orbit does), so the
host only returns between log, evaluation and checkpoint points. Nothing in a
step goes back to the host: the loss is kept in metrics on the devices, a
non-finite loss is counted there and checked once per chunk of steps, and
evaluation sums stay on the devices until the pass ends. Steps have no Python
side effects and static shapes, as TPUs need.
"""
import math

import tensorflow as tf

EVAL_BATCH_SIZE = 1000


def distribute(strategy, make_dataset):
  """The distributed dataset of `make_dataset(replicas, num_replicas)` under `strategy`.

  Each input pipeline (one per worker or TPU host) builds only the slices of its
  own replicas, so no worker reads or preprocesses another's share. The default
  strategy gets the whole batch (replicas (0,) of 1).
  """
  def dataset_fn(context):
    local = context.num_replicas_in_sync // context.num_input_pipelines
    first = context.input_pipeline_id * local
    return make_dataset(tuple(range(first, first + local)), context.num_replicas_in_sync)
  return strategy.distribute_datasets_from_function(dataset_fn)


def eval_batch_size(count, replicas):
  """At most EVAL_BATCH_SIZE (or one per replica), a multiple of `replicas`, and no larger
  than `count` rounded up to one, so small evaluation sets are not mostly padding."""
  largest = max(replicas, EVAL_BATCH_SIZE // replicas * replicas)
  return min(largest, math.ceil(count / replicas) * replicas)


def eval_dataset(data, split, strategy):
  """(distributed padded batches of `split`, example count). Small evaluation sets get one
  batch of their own size, not a mostly padded one; the batch splits evenly over replicas."""
  count = data.eval_count(split)
  batch_size = eval_batch_size(count, strategy.num_replicas_in_sync)
  return distribute(strategy, lambda r, n: data.eval_batches(split, batch_size, r, n)[0]), count


def split_outputs(outputs):
  """(logits, aux_logits or None): models with an auxiliary head return a list."""
  if isinstance(outputs, (list, tuple)):
    return outputs[0], outputs[1]
  return outputs, None


def compiled(fn, jit_compile):
  """`fn` XLA-compiled (to be run per replica by strategy.run), or `fn` as it is.

  Each call makes a compiled function of its own: callers run inside a tf.function, so this
  happens once per replica when that is traced. One compiled function shared by the replicas
  would be placed on the first replica's device, from where XLA cannot reach the others'
  variables."""
  if not jit_compile:
    return fn
  return lambda *args: tf.function(fn, jit_compile=True)(*args)


def cross_entropy(labels, logits):
  # In float32 also for a bfloat16 model (TrainingConfig.precision).
  return tf.keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32),
                                                         from_logits=True)


class Steps:
  """The train loop of one model and optimizer under one strategy."""

  def __init__(self, model, optimizer, strategy, global_batch_size, weight_decay=0.0,
               aux_loss_weight=0.4, jit_compile=False, make_batch=None):
    self.model = model
    self.optimizer = optimizer
    self.strategy = strategy
    self.global_batch_size = global_batch_size
    self.weight_decay = weight_decay
    self.aux_loss_weight = aux_loss_weight
    with strategy.scope():
      self.train_loss = tf.keras.metrics.Mean('train_loss')
      self.train_accuracy = tf.keras.metrics.SparseCategoricalAccuracy('train_accuracy')
      # Steps whose loss was not finite, summed over replicas; read once per chunk.
      self.nonfinite_steps = tf.keras.metrics.Sum('nonfinite_steps')
    self._gradients = compiled(self.gradients, jit_compile)
    self.train_loop = tf.function(self._train_loop)
    # With `make_batch(example indices, iteration) -> (images, labels)` (in-memory data under
    # the default strategy), a loop that makes each batch itself from the training set held
    # on the device: no tf.data between steps, so that with jit_compile the whole loop is one
    # XLA program (Run.gathers_batches says where that pays).
    self._make_batch = make_batch
    self.gathered_train_loop = tf.function(self._gathered_train_loop, jit_compile=jit_compile,
                                           reduce_retracing=True)

  def replica_step(self, images, labels):
    """One step on one replica's share of the batch; returns its share of the loss."""
    loss, gradients = self._gradients(images, labels)
    self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
    return loss

  def gradients(self, images, labels):
    """(loss share, gradients) of one replica's share of the batch, its metrics updated.
    This is what RunOptions.jit_compile compiles: the update after it sums the replicas'
    gradients (a merge_call), which a compiled function nested in strategy.run may not do."""
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      logits, aux_logits = split_outputs(self.model(images, training=True))
      per_example = cross_entropy(labels, logits)
      if aux_logits is not None:
        per_example += self.aux_loss_weight * cross_entropy(labels, aux_logits)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
    gradients = tape.gradient(loss, variables)
    if self.weight_decay:
      # Gradients are summed over replicas, so each adds its share of the decay.
      decay = self.weight_decay / self.strategy.num_replicas_in_sync
      gradients = [g + decay * v for g, v in zip(gradients, variables)]
    self.train_loss.update_state(per_example)
    self.train_accuracy.update_state(labels, logits)
    self.nonfinite_steps.update_state(1.0 - tf.cast(tf.math.is_finite(loss), tf.float32))
    return loss, gradients

  def _train_loop(self, iterator, num_steps):
    """Runs num_steps steps, with no value going back to the host between them."""
    for _ in tf.range(num_steps):
      images, labels = next(iterator)
      self.strategy.run(self.replica_step, args=(images, labels))

  def _gathered_train_loop(self, indices, first_iteration):
    """A step for each row of `indices`, the examples of iterations first_iteration, ..."""
    for i in tf.range(tf.shape(indices)[0]):
      images, labels = self._make_batch(indices[i], first_iteration + tf.cast(i, tf.int64))
      self.replica_step(images, labels)

  def first_nonfinite_step(self, num_steps):
    """Of the last `num_steps` steps run since the count was reset, the first (1-based) whose
    loss was not finite, or None. A non-finite loss makes the weights non-finite, so every
    step after it is too: the count of such steps, per replica, says where they began."""
    count = float(self.nonfinite_steps.result()) / self.strategy.num_replicas_in_sync
    self.nonfinite_steps.reset_state()
    return None if count == 0 else num_steps - int(round(count)) + 1


class Evaluator:
  """Loss and error of a model on a split, under a strategy; padding examples weigh 0."""

  def __init__(self, model, strategy, jit_compile=False):
    self.model = model
    self.strategy = strategy
    self._replica_sums = compiled(self.replica_sums, jit_compile)
    with strategy.scope():  # each replica adds to its own sums; they are summed when read
      self.loss_sum = tf.keras.metrics.Sum('eval_loss_sum')
      self.correct_sum = tf.keras.metrics.Sum('eval_correct_sum')
    self._evaluate = tf.function(self._evaluate_dataset)

  def _evaluate_dataset(self, dataset):
    for images, labels, weights in dataset:
      self.strategy.run(self._replica_sums, args=(images, labels, weights))

  def replica_sums(self, images, labels, weights):
    """Adds the summed loss and the number correct of one replica's batch to its sums."""
    logits, _ = split_outputs(self.model(images, training=False))
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    self.loss_sum.update_state(tf.reduce_sum(cross_entropy(labels, logits) * weights))
    self.correct_sum.update_state(tf.reduce_sum(correct * weights))

  def evaluate(self, data, split):
    """{'loss', 'error'} of the model on a split ('test' or 'train') of `data`."""
    dataset, count = eval_dataset(data, split, self.strategy)
    self.loss_sum.reset_state()
    self.correct_sum.reset_state()
    self._evaluate(dataset)
    return {'loss': float(self.loss_sum.result()) / count,
            'error': 1.0 - float(self.correct_sum.result()) / count}

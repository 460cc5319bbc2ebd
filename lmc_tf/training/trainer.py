"""One training run in one directory: resumable, checkpointed, logged to TensorBoard.

The directory's files and layout are lmc_tf/store.py's. Checkpoints are kept at
iteration 0, the rewinding points (RunOptions.checkpoint_at), every epoch and
the end, and never rotated away; weights.npz (and mask.npz, for runs given a
mask) are written at the end, before metrics.json.
"""
import concurrent.futures
import dataclasses
import tempfile
import threading
import time
from typing import Dict, Optional

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from lmc_tf import io_utils
from lmc_tf import models
from lmc_tf import steps as steps_lib
from lmc_tf import store
from lmc_tf import workers
from lmc_tf.errors import UserError
from lmc_tf.models import masking
from lmc_tf.training import loop
from lmc_tf.training import optim
from lmc_tf.training import strategy as strategy_lib

@dataclasses.dataclass
class Start:
  """A run that starts at `iteration` from given weights and mask, with a fresh optimizer
  (as OpenLTH's rewinding does); the learning-rate schedule and the data order continue
  from `iteration`."""
  weights: Dict[str, object]
  masks: Optional[Dict[str, object]]
  iteration: int


def check_config(hparams, options, data):
  """Refuses a config that cannot train, before anything is written or trained; returns
  the run's clock."""
  training = hparams.training
  batch_size = training.batch_size
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise UserError(f'TrainingConfig.batch_size = {batch_size!r} is not a positive integer: '
                    'write e.g. TrainingConfig.batch_size = 60')
  models.check_name(hparams.model.name)
  if training.precision not in PRECISIONS:
    raise UserError(f'TrainingConfig.precision = {training.precision!r} is unknown: choose one '
                    f'of {", ".join(PRECISIONS)}')
  iterations_per_epoch = data.iterations_per_epoch(batch_size)
  total = steps_lib.to_iterations(training.training_steps, iterations_per_epoch)
  if total < 1:
    raise UserError(f'training_steps {training.training_steps!r} is no iterations: train for '
                    'at least "1it"')
  clock = steps_lib.Clock(iterations_per_epoch, total)
  optim.check(training, clock)
  late = [p for p in options.checkpoint_at if clock.iterations(p) > total]
  if late:
    raise UserError(f'rewinding point {late[0]!r} is past the end of training '
                    f'({training.training_steps} = {total}it): choose an earlier point')
  for name in ('log_every', 'eval_every'):
    clock.iterations(getattr(options, name))
  return clock


def description(hparams, lineage=None):
  """What hparams.json holds: the config and, for a run started from another run's state,
  how that start was made (`lineage`, e.g. its IMP level)."""
  wanted = hparams.to_dict()
  if lineage:
    wanted['lineage'] = lineage
  return wanted


def weight_variables(model):
  """Variable path (without ':0') -> variable, for every variable of the model but the
  pruning wrappers' own (masks are saved apart)."""
  bookkeeping = {id(v) for layer in masking.masked_layers(model)
                 for v in layer.non_trainable_weights[len(layer.layer.non_trainable_weights):]}
  return {masking.variable_path(v): v for v in model.variables if id(v) not in bookkeeping}


def weights_dict(model):
  """Variable path -> numpy array: the contents of weights.npz."""
  return {path: v.numpy() for path, v in weight_variables(model).items()}


def check_weights_fit(model, weights):
  """Refuses weights that miss a model variable or have another shape."""
  variables = weight_variables(model)
  missing = sorted(set(variables) - set(weights))
  if missing:
    raise UserError(f'the weights do not fit the model: {missing[:3]} missing: use weights '
                    'of the same model config')
  for path, variable in variables.items():
    if tuple(np.shape(weights[path])) != tuple(variable.shape):
      raise UserError(f'the weights of {path} have shape {np.shape(weights[path])}, the '
                      f'model {tuple(variable.shape)}: use the same model config')


def assign_weights(model, weights):
  """Assigns weights by variable path; every model variable must be given, in its shape."""
  check_weights_fit(model, weights)
  for path, variable in weight_variables(model).items():
    variable.assign(weights[path])


def _format_seconds(seconds):
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def build_model(hparams, data, precision='float32'):
  """The run's model: built from the init seed, prunable layers wrapped with masks of ones;
  its layers compute in `precision` (a Keras dtype policy; variables stay float32)."""
  build = lambda: masking.wrap(models.build(hparams.model.name, data.image_shape,
                                            data.num_classes, hparams.training.init_seed))
  if precision == 'float32':
    return build()  # under the current policy: Keras' floatx (tests build float64 models)
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(precision)
  try:
    return build()
  finally:
    # None where it was floatx's: set explicitly, it would no longer follow floatx (the
    # PyTorch comparisons build float64 models after bfloat16 ones in one process).
    default = previous.name == tf.keras.backend.floatx()
    tf.keras.mixed_precision.set_global_policy(None if default else previous)


def loop_compiles_whole(model, data, strategy):
  """Whether XLA compiles the train loop into one program per chunk of steps that gathers its
  own batches (Steps.gathered_train_loop): in-memory data, the default strategy and a network
  without convolutions. Convolutional networks keep one program per step: as one loop,
  ResNet-20 ran many times slower on a 2-core Xeon. Uncompiled, such a loop was no faster
  than tf.data, which makes the next batches on another core while a step runs."""
  return (data.held_in_memory and strategy_lib.is_default(strategy) and
          not any(isinstance(layer, tf.keras.layers.Conv2D) for layer in model.submodules))


def compiles(jit_compile, model, data, strategy, evaluation=False):
  """RunOptions.jit_compile resolved for a model's training or, with `evaluation`, for its
  evaluation and interpolation. None: XLA where it was measured to pay on CPUs, a train loop
  that compiles whole (LeNet: 2x the uncompiled steps/s on a 2-core Xeon,
  benchmarks/vs_pytorch.py); not a convolutional network (ResNet-20 compiled: under half its
  uncompiled steps/s there), and no evaluation (LeNet's ran no faster compiled; uncompiled,
  `lmc_tf.align` without --jit_compile evaluates as the analysis did). A TPU compiles every
  step whatever this says."""
  if jit_compile is not None:
    return jit_compile
  return not evaluation and loop_compiles_whole(model, data, strategy)


def weights_at(run_dir, iteration, hparams, data, model=None):
  """(weights, masks) of the run in `run_dir` (a path or a store.RunDir) at checkpoint
  `iteration`, read through `model` (a model of these hparams, overwritten) or a new one."""
  model = model or build_model(hparams, data)
  checkpoint = store.RunDir(run_dir).checkpoint(iteration)
  tf.train.Checkpoint(model=model).read(checkpoint).expect_partial()
  return weights_dict(model), masking.get_masks(model)


# Set while map_in_threads winds down after one of its calls failed or Ctrl-C: runs in the
# other threads stop at their next chunk of steps, leaving their last checkpoint to resume.
_stop_threads = threading.Event()


class StoppedBySibling(Exception):
  """A run stopped because another thread of map_in_threads failed or was interrupted."""


def check_not_stopped():
  """Raises StoppedBySibling once map_in_threads has been told to stop (Run.train calls it
  between chunks of steps)."""
  if _stop_threads.is_set():
    raise StoppedBySibling('stopped: another thread failed or was interrupted')


def map_in_threads(fn, items, threads):
  """[fn(item) for item in items], `threads` calls at a time (in this thread when 1).

  The first error, or Ctrl-C, ends it without waiting for the other calls to finish: calls
  not begun are dropped, runs that are training stop at their next chunk of steps
  (check_not_stopped), and that first error is raised (Ctrl-C: KeyboardInterrupt)."""
  if threads == 1:
    return [fn(item) for item in items]
  pool = concurrent.futures.ThreadPoolExecutor(threads)
  futures = [pool.submit(fn, item) for item in items]
  try:
    concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    failed = [f for f in futures if f.done() and f.exception() is not None]
    if failed:
      raise failed[0].exception()
    return [f.result() for f in futures]
  except BaseException:
    _stop_threads.set()
    raise
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    _stop_threads.clear()


PRECISIONS = ('float32', 'mixed_bfloat16')

# Building a model resets Keras' global layer-name counters and seeds the global random
# generators (models.build): runs trained in threads (parallel copies) build one at a time.
_BUILD_LOCK = threading.Lock()


class Run:
  """A model, its optimizer and checkpoints, built under `strategy` from `hparams`."""

  def __init__(self, hparams, options, run_dir, data, strategy=None, start=None):
    self.hparams, self.options, self.data = hparams, options, data
    self.run_dir = store.RunDir(run_dir)
    self.start = start
    self.strategy = strategy or tf.distribute.get_strategy()
    training = hparams.training
    self.clock = check_config(hparams, options, data)
    if start is not None and not 0 <= start.iteration < self.clock.total:
      raise UserError(f'start iteration {start.iteration} is outside training '
                      f'(0..{self.clock.total - 1}): choose an earlier rewinding point')
    self.checkpoint_points = sorted({self.clock.iterations(p) for p in options.checkpoint_at})
    self.log_every = max(1, self.clock.iterations(options.log_every))
    self.eval_every = max(1, self.clock.iterations(options.eval_every))
    with self.strategy.scope():
      self.model = build_model(hparams, data, training.precision)
      self.schedule = optim.make_schedule(training, self.clock)
      # Where the optimizer started: the run's iteration is this plus its step count.
      self.first_iteration = tf.Variable(0, dtype=tf.int64, trainable=False)
      self.optimizer = optim.make_optimizer(training, self.schedule, self.first_iteration)
      self.optimizer.build(self.model.trainable_variables)
      self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False)
    can_gather = data.held_in_memory and strategy_lib.is_default(self.strategy)
    self.jit_compile = compiles(options.jit_compile, self.model, data, self.strategy)
    self.gathers_batches = self.jit_compile and loop_compiles_whole(self.model, data,
                                                                     self.strategy)
    logging.info('XLA %s (RunOptions.jit_compile = %s)%s', 'on' if self.jit_compile else 'off',
                 options.jit_compile, ', one program per chunk' if self.gathers_batches else '')
    make_batch = None
    if can_gather:
      batch = training.batch_size
      make_batch = lambda index, iteration: data.make_batch(
          index, iteration, training.data_order_seed, np.arange(batch), batch)
    self.steps = loop.Steps(self.model, self.optimizer, self.strategy, training.batch_size,
                            training.weight_decay, training.aux_loss_weight, self.jit_compile,
                            make_batch)
    self.evaluator = loop.Evaluator(self.model, self.strategy, compiles(
        options.jit_compile, self.model, data, self.strategy, evaluation=True))
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                          first_iteration=self.first_iteration,
                                          elapsed_seconds=self.elapsed)
    # Every worker of a multi-worker job saves (saving may take part in collectives);
    # all but the chief into a scratch directory that nobody reads.
    self.scratch_dir = None if workers.is_chief() else tempfile.mkdtemp(prefix='lmc_tf_worker_')
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self.scratch_dir or self.run_dir.checkpoint_dir, max_to_keep=None,
        checkpoint_name='ckpt')

  def check_start(self):
    """Refuses start weights or masks that do not fit the model (before the run is claimed)."""
    if self.start is not None:
      check_weights_fit(self.model, self.start.weights)
      if self.start.masks is not None:
        masking.check_masks_fit(self.start.masks, self.model)

  @property
  def iteration(self):
    return int(self.first_iteration.numpy()) + int(self.optimizer.iterations.numpy())

  def _is_checkpoint_point(self, iteration):
    at_epoch_end = iteration % self.clock.iterations_per_epoch == 0
    return (iteration in self.checkpoint_points or iteration == self.clock.total or
            (self.options.checkpoint_every_epoch and at_epoch_end))

  def _next_stop(self, iteration):
    candidates = [self.clock.total,
                  (iteration // self.log_every + 1) * self.log_every,
                  (iteration // self.eval_every + 1) * self.eval_every]
    if self.options.checkpoint_every_epoch:
      candidates.append(self.clock.epoch_ends_after(iteration)[0])
    candidates += [p for p in self.checkpoint_points if p > iteration]
    return min(candidates)

  def restore_or_initialize(self):
    """Restores the latest readable checkpoint (a corrupt one is skipped with a warning),
    or sets up the start state and checkpoints it."""
    saved = self.run_dir.checkpoints()
    workers.barrier(self.strategy)  # every worker has decided before the chief saves
    for path in saved:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:  # as TF raises them
        logging.warning('Checkpoint %s is unreadable (%s); trying the one before it', path,
                        type(e).__name__)
        continue
      logging.info('Resuming %s at iteration %d', self.run_dir, self.iteration)
      return
    if saved:
      raise UserError(f'no checkpoint in {self.run_dir.checkpoint_dir} is readable: delete '
                      f'{self.run_dir} and run the same command again to start over')
    iteration = 0
    if self.start is not None:
      assign_weights(self.model, self.start.weights)
      masking.set_masks(self.model, self.start.masks)
      iteration = self.start.iteration
      self.first_iteration.assign(iteration)  # the optimizer itself starts fresh
    self.manager.save(checkpoint_number=iteration)

  def train_iterator(self, start):
    """The distributed training batches from iteration `start` to the end."""
    training = self.hparams.training
    return iter(loop.distribute(self.strategy, lambda replicas, num_replicas: (
        self.data.train_batches(training.batch_size, training.data_order_seed, start,
                                self.clock.total, replicas, num_replicas))))

  def train(self):
    """Trains from the current iteration to the end, checkpointing and logging on the way."""
    training = self.hparams.training
    writer = io_utils.summary_writer(self.run_dir.path)
    start = self.iteration
    with writer.as_default(step=start):
      tf.summary.text('config/operative_gin', gin.markdown(gin.operative_config_str()))
    iterator = None if self.gathers_batches else self.train_iterator(start)
    began = time.time()
    elapsed_before = float(self.elapsed.numpy())
    iteration = start
    while iteration < self.clock.total:
      check_not_stopped()
      stop = self._next_stop(iteration)
      if self.gathers_batches:
        self.steps.gathered_train_loop(
            self.data.train_indices(training.batch_size, training.data_order_seed, iteration,
                                    stop), tf.constant(iteration, tf.int64))
      else:
        self.steps.train_loop(iterator, tf.constant(stop - iteration))
      first = self.steps.first_nonfinite_step(stop - iteration)
      if first is not None:
        loss = float(self.steps.train_loss.result())
        raise UserError(f'loss is {loss} at iteration {iteration + first - 1}: lower the '
                        'learning rate or check the data')
      iteration = stop
      self.elapsed.assign(elapsed_before + time.time() - began)
      with writer.as_default(step=iteration):
        if iteration % self.log_every == 0 or iteration == self.clock.total:
          self._log_train(iteration, start, began)
        if iteration % self.eval_every == 0 or iteration == self.clock.total:
          for key, value in self.evaluator.evaluate(self.data, 'test').items():
            tf.summary.scalar(f'test/{key}', value)
      if self._is_checkpoint_point(iteration):
        self.manager.save(checkpoint_number=iteration)
    writer.flush()
    # The input pipeline goes before the summary writer: deleted after it, when this
    # returned, it held up the return for about 10 s (LeNet, 6000 or 12000 iterations).
    del iterator

  def _log_train(self, iteration, start, began):
    loss = float(self.steps.train_loss.result())
    accuracy = float(self.steps.train_accuracy.result())
    tf.summary.scalar('train/loss', loss)
    tf.summary.scalar('train/accuracy', accuracy)
    tf.summary.scalar('learning_rate', float(self.schedule(iteration)))
    self.steps.train_loss.reset_state()
    self.steps.train_accuracy.reset_state()
    rate = (iteration - start) / max(time.time() - began, 1e-9)
    logging.info('iteration %d/%d (%.1f%%)  %.0f it/s  ETA %s  train loss %.4f accuracy %.4f',
                 iteration, self.clock.total, 100 * iteration / self.clock.total, rate,
                 _format_seconds((self.clock.total - iteration) / max(rate, 1e-9)), loss, accuracy)

  def finish(self):
    """Evaluates the final model and writes weights.npz, then metrics.json."""
    metrics = {'iterations': self.clock.total, 'wall_time_s': round(float(self.elapsed.numpy()), 2)}
    for split in ('train', 'test'):
      for key, value in self.evaluator.evaluate(self.data, split).items():
        metrics[f'{split}_{key}'] = value
    arrays = {store.WEIGHTS: weights_dict(self.model)}
    if self.start is not None and self.start.masks is not None:
      arrays[store.MASK] = masking.get_masks(self.model)
    self.run_dir.write_results(metrics, arrays)
    if self.scratch_dir:
      tf.io.gfile.rmtree(self.scratch_dir)
    return metrics


def set_determinism(options):
  """Deterministic ops (RunOptions.deterministic): the same seeds give the same numbers."""
  if options.deterministic:
    tf.config.experimental.enable_op_determinism()


def train(hparams, options, run_dir, data, strategy=None, start=None, lineage=None):
  """Trains (or resumes, or just reads) the run of `hparams` in `run_dir` (a path or a
  store.RunDir); returns its metrics.

  `start` begins the run from given weights, mask and iteration instead of the
  initialization; `lineage` records in hparams.json how that start was made.
  """
  strategy = strategy or tf.distribute.get_strategy()
  run_dir = store.RunDir(run_dir)
  check_config(hparams, options, data)
  with run_dir.locked(strategy):
    finished = run_dir.finished()
    if not finished:
      # Everything is checked before the directory is claimed, so that a refused command
      # leaves nothing behind that would refuse the corrected one.
      set_determinism(options)
      with _BUILD_LOCK:
        run = Run(hparams, options, run_dir, data, strategy, start)
      run.check_start()
    run_dir.claim(description(hparams, lineage))
    if finished:
      logging.info('%s already finished; nothing to do', run_dir)
      return run_dir.metrics()
    run_dir.write_text(store.OPERATIVE_CONFIG, gin.operative_config_str())
    run.restore_or_initialize()
    run.train()
    metrics = run.finish()
  workers.barrier(strategy)  # the chief's weights.npz and metrics.json are written
  return metrics

"""Instability analysis of a network (or subnetwork) at iteration k.

Train to k (the `parent` run; at k = 0 the initialization is used directly);
make copies; optionally apply a mask (an IMP mask, or a random-pruning or
random-reinit baseline of it); train each copy from k to the end under its own
data-order seed; compare the copies. The analysis directory (a store.RunDir) holds:

  hparams.json            the config and the Spec's lineage (with the mask's hash)
  parent/                 a run directory: the network trained from init (k > 0), unless
                          another run directory of the same hparams is given as parent
  copy_0/, copy_1/, ...   run directories of the copies (weights.npz, mask.npz,
                          a checkpoint every epoch)
  metrics.json            everything below; its presence marks the analysis done
  events.out.tfevents.*   the same numbers as TensorBoard summaries, and plots
  aligned.json            `python -m lmc_tf.align` on the finished analysis (optional)

Instability modulo permutation (InterpolationConfig.align, .repair; `compare_aligned`).
For each pair of copies (A, B) and each method in `align`, B is aligned to A
(lmc_tf/analysis/alignment.py): 'weights' is weight matching (seed 0),
'activations' is activation matching on the first ALIGN_EXAMPLES (5000) examples
of the training set in its evaluation order (fewer when DatasetConfig's
train_eval_examples is smaller), without augmentation. metrics['aligned'][method]
then holds what the raw comparison holds for A and aligned B: 'interpolation'
(test and train curves at the same alphas, BatchNorm handled as the raw curves
are), 'endpoints', 'instability' (the barriers), 'distances' ('l2', 'cosine'
between A and aligned B; masked networks on the union of A's and aligned B's
masks), with repair also 'repaired' (the curves and barriers of the REPAIRed
networks, one per alpha, REPAIR's statistics taken on the same examples; a
REPAIRed BatchNorm network has its own reset statistics, so batch_norm =
'recompute' is not applied on top), and 'wall_time_s' (matching, evaluation,
REPAIR). The raw keys are computed first and are the same with or without
alignment; `python -m lmc_tf.align` computes the same `aligned` for a finished
analysis.
"""
import dataclasses
import functools
import hashlib
import itertools
import queue
import time
from typing import Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from lmc_tf import config as config_lib
from lmc_tf import store
from lmc_tf import summaries
from lmc_tf import workers
from lmc_tf.analysis import alignment
from lmc_tf.analysis import distances
from lmc_tf.analysis import interpolation
from lmc_tf.errors import UserError
from lmc_tf.pruning import lottery
from lmc_tf.models import masking
from lmc_tf.training import loop
from lmc_tf.training import strategy as strategy_lib
from lmc_tf.training import trainer

SPLITS = ('test', 'train')
ALIGN_METHODS = ('weights', 'activations')
ALIGN_EXAMPLES = 5000  # activation matching and REPAIR: the first N training examples
ALIGN_BATCH_SIZE = 250


def _mask_digest(masks):
  digest = hashlib.sha256()
  for path in sorted(masks):
    digest.update(path.encode())
    digest.update(np.ascontiguousarray(masks[path], np.float32).tobytes())
  return digest.hexdigest()


def check_interpolation(interp, model_name=None):
  """Refuses an InterpolationConfig the analysis cannot run, before anything trains;
  with `model_name`, also alignment of a model without a permutation spec."""
  for field in ('num_alphas', 'batch_norm_batches', 'throughout_train_examples',
                'throughout_num_alphas'):
    value = getattr(interp, field)
    if not isinstance(value, int) or isinstance(value, bool):
      raise UserError(f'InterpolationConfig.{field} must be a whole number, not {value!r}')
  if interp.num_alphas < 2 or interp.alpha_min >= interp.alpha_max:
    raise UserError('interpolation needs InterpolationConfig.num_alphas >= 2 and alpha_min < '
                    'alpha_max')
  if interp.batch_norm == 'recompute' and interp.batch_norm_batches < 1:
    raise UserError('InterpolationConfig.batch_norm_batches must be at least 1 to recompute '
                    'BatchNorm statistics')
  if interp.batch_norm not in ('interpolate', 'recompute'):
    raise UserError(f'unknown InterpolationConfig.batch_norm {interp.batch_norm!r}: choose '
                    'interpolate or recompute')
  if interp.throughout_train_examples < 1:
    raise UserError('InterpolationConfig.throughout_train_examples must be at least 1')
  if interp.throughout_num_alphas < 0 or interp.throughout_num_alphas == 1:
    raise UserError('InterpolationConfig.throughout_num_alphas must be 0 (num_alphas) or at '
                    'least 2')
  if isinstance(interp.align, str):
    raise UserError(f'InterpolationConfig.align must be a tuple, e.g. ({interp.align!r},), '
                    f'not the string {interp.align!r}')
  unknown = [method for method in interp.align if method not in ALIGN_METHODS]
  if unknown or len(set(interp.align)) != len(interp.align):
    raise UserError(f'InterpolationConfig.align = {tuple(interp.align)!r}: give each of '
                    f"{', '.join(ALIGN_METHODS)} at most once, e.g. ('weights', 'activations')")
  if interp.repair and not interp.align:
    raise UserError("InterpolationConfig.repair needs an alignment: set InterpolationConfig."
                    "align, e.g. ('weights', 'activations')")
  if interp.align and model_name is not None:
    alignment.permutation_spec(model_name)  # a UserError for a model without one


def check_parent(parent_dir):
  """Refuses a parent a user names that holds no run (a mistyped one would be trained
  anew); a sweep's parent is its shared dense run, which may not be trained yet."""
  if not store.RunDir(parent_dir).exists(store.HPARAMS):
    raise UserError(f'--parent={parent_dir} holds no run: give the directory of a run of the '
                    "same config with a checkpoint at k (e.g. an IMP run's level_00)")


@dataclasses.dataclass(frozen=True)
class Spec:
  """What determines one instability analysis: its directory's hash (in a sweep) and the
  lineage its hparams.json and its copies' record. Build it with `make_spec`, which checks it.

  `pruning` is the PruningConfig that made the mask (None for the unpruned network): two
  analyses of one level of different IMP runs differ by it.
  """
  hparams: config_lib.Hparams
  interp: config_lib.InterpolationConfig
  rewind_iteration: int  # k
  data_order_seeds: Tuple[int, ...]  # one per copy
  baseline: str = 'imp'  # how the copies' subnetwork is made from the mask (lottery.py)
  baseline_seed: Optional[int] = None  # the seed of a random baseline's draw
  level: Optional[int] = None  # the IMP level of the mask
  pruning: Optional[config_lib.PruningConfig] = None

  def description(self):
    """What the analysis' directory name hashes. Its keys are those of the first sweeps
    ('rewind', 'copy_seeds'), so that their directories keep their names."""
    description = {'hparams': self.hparams, 'rewind': self.rewind_iteration,
                   'copy_seeds': list(self.data_order_seeds), 'level': self.level or 0,
                   'baseline': self.baseline, 'interpolation': self.interp}
    if self.level:
      description['pruning'] = self.pruning
    return description

  def run_dir(self, root):
    return store.RunDir(store.run_dir(root, 'lmc', self.description()))

  def lineage(self, masks):
    """What, beyond hparams, determines the analysis' result: written to its hparams.json."""
    return {'analysis': 'instability', 'rewind_iteration': self.rewind_iteration,
            'data_order_seeds': list(self.data_order_seeds),
            'mask_sha256': None if masks is None else _mask_digest(masks),
            'baseline': self.baseline, 'baseline_seed': self.baseline_seed,
            # Plain JSON types (InterpolationConfig.align is a tuple), as hparams.json reads.
            'interpolation': config_lib.as_json(dataclasses.asdict(self.interp))}

  def copy_hparams(self, index):
    return dataclasses.replace(self.hparams, training=dataclasses.replace(
        self.hparams.training, data_order_seed=self.data_order_seeds[index]))


def make_spec(hparams, options, interp, data, rewind='0it', copies=2, data_order_seeds=None,
              baseline='imp', pruning=None, level=None, has_mask=False):
  """The Spec of an analysis at the rewinding point `rewind` ('500it', '2ep'), checked:
  a refused one is refused before anything trains or is written. `pruning` gives the
  seed of the random baselines (PruningConfig.baseline_seed) and, in a sweep, names
  the IMP run the mask comes from."""
  clock = trainer.check_config(hparams, options, data)
  rewind_iteration = clock.rewinding_point(rewind)
  if copies < 2:
    raise UserError(f'--copies={copies}: the analysis compares at least 2 copies')
  if data_order_seeds is None:
    data_order_seeds = [hparams.training.data_order_seed + 1 + i for i in range(copies)]
  if len(data_order_seeds) != copies:
    raise UserError(f'{len(data_order_seeds)} data-order seeds for {copies} copies: give one '
                    'per copy')
  if baseline != 'imp' and not has_mask:
    raise UserError(f'--baseline={baseline} needs the --mask it is a baseline of')
  if baseline != 'imp' and level is None:
    raise UserError(f'--baseline={baseline} needs the IMP level of its mask, which seeds the '
                    'baseline: give --level, or a --mask from an IMP level directory')
  check_interpolation(interp, hparams.model.name)
  pruning = pruning or config_lib.PruningConfig()
  # The same draw as the IMP run's baseline of this level and init seed.
  seed = (None if baseline == 'imp' else
          lottery.baseline_seed(pruning.baseline_seed, hparams.training.init_seed, level))
  return Spec(hparams, interp, rewind_iteration, tuple(data_order_seeds), baseline, seed, level,
              pruning if level else None)


class Analysis:
  """Trains the copies of one instability analysis (a Spec) and compares them."""

  def __init__(self, spec, options, run_dir, data, strategy=None, masks=None, parent_dir=None):
    self.spec, self.options, self.data = spec, options, data
    self.hparams, self.interp, self.k = spec.hparams, spec.interp, spec.rewind_iteration
    self.run_dir = store.RunDir(run_dir)
    self.strategy = strategy or tf.distribute.get_strategy()
    self.clock = trainer.check_config(spec.hparams, options, data)
    if masks is not None:
      # A mask that does not fit is refused before the parent trains or anything is written.
      masking.check_masks_fit(masks, self._model())
    self.masks = masks
    # Any finished or resumable run of the same hparams serves as the parent, e.g. level 0
    # of an IMP run; it must hold a checkpoint at k.
    self.parent_dir = store.RunDir(parent_dir) if parent_dir else self.run_dir.parent()
    self.alphas = alphas_of(self.interp)
    self.throughout_seconds = 0.0

  def start_state(self):
    """(weights at init, weights at k, the copies' start weights, their masks)."""
    if self.k == 0:
      initial = trainer.weights_dict(self._model())
      rewound = initial
    else:
      parent = self.parent_dir
      options = dataclasses.replace(self.options, checkpoint_at=tuple(
          self.options.checkpoint_at) + (f'{self.k}it',))
      trainer.train(self.hparams, options, parent, self.data, self.strategy)
      initial, _ = trainer.weights_at(parent, 0, self.hparams, self.data)
      rewound, _ = trainer.weights_at(parent, self.k, self.hparams, self.data)
    if self.masks is None:
      return initial, rewound, rewound, None
    weights, masks = lottery.start_state(self.spec.baseline, rewound, self.masks, self.hparams,
                                         self.data, self.spec.baseline_seed)
    return initial, rewound, weights, masks

  def _model(self):
    with self.strategy.scope():
      return trainer.build_model(self.hparams, self.data)

  def _interpolator(self):
    """An Interpolator of its own model, XLA-compiled as RunOptions.jit_compile says for
    evaluation."""
    model = self._model()
    return interpolation.Interpolator(model, self.strategy, trainer.compiles(
        self.options.jit_compile, model, self.data, self.strategy, evaluation=True))

  def train_copies(self, start_weights, masks):
    options = dataclasses.replace(self.options, checkpoint_every_epoch=True)
    lineage = {key: value for key, value in self.spec.lineage(self.masks).items()
               if key != 'interpolation'}

    def train(index):
      trainer.train(self.spec.copy_hparams(index), options, self.run_dir.copy(index),
                    self.data, self.strategy, start=trainer.Start(start_weights, masks, self.k),
                    lineage=lineage)
      return self.run_dir.copy(index)

    return trainer.map_in_threads(train, range(len(self.spec.data_order_seeds)), self._threads())

  def _threads(self):
    """Threads for the copies' training and the evaluations after it: one per copy where
    RunOptions.parallel_copies holds under the default strategy (the one tested bit for bit
    against one copy after the other), else 1."""
    if self.options.parallel_copies and strategy_lib.is_default(self.strategy):
      return len(self.spec.data_order_seeds)
    return 1

  def run(self):
    with self.run_dir.locked(self.strategy):
      metrics = self._run()
    workers.barrier(self.strategy)  # the chief's metrics.json is written
    return metrics

  def _run(self):
    trainer.set_determinism(self.options)  # evaluation too, so a resumed analysis is bitwise
    self.run_dir.claim(trainer.description(self.hparams, self.spec.lineage(self.masks)))
    if self.run_dir.finished():
      logging.info('%s already analysed; nothing to do', self.run_dir)
      return self.run_dir.metrics()
    began = time.time()
    initial, rewound, start_weights, masks = self.start_state()
    directories = self.train_copies(start_weights, masks)
    trained = time.time()
    # An evaluator per thread: an Interpolator and, for Appendix C, a model that reads
    # checkpoints, each with models of its own, among which the evaluations are shared
    # (_in_threads).
    self.evaluators = [(self._interpolator(),
                        self._model() if self.interp.throughout_training else None)
                       for _ in range(self._threads())]
    if masks is None:
      masks = masking.get_masks(self.evaluators[0][0].model)  # all ones
    finals = [d.read_arrays(store.WEIGHTS) for d in directories]
    pairs = [self._compare(finals[i], finals[j], masks, directories[i], directories[j])
             for i, j in itertools.combinations(range(len(finals)), 2)]
    metrics = _mean_over_pairs(pairs)
    metrics['interpolation']['alphas'] = [float(a) for a in self.alphas]
    metrics['stable'] = metrics['instability']['test']['error'] < self.interp.stable_threshold
    metrics['pairs'] = pairs if len(pairs) > 1 else []
    metrics['rewind'] = self._rewind_state(initial, rewound, start_weights, finals, masks,
                                           metrics['distances']['l2'])
    metrics['copies'] = [d.name for d in directories]
    if self.interp.throughout_training:
      metrics['throughout_training_examples'] = {
          'test': self.data.eval_count('test'),
          'train': self.throughout_train_data().eval_count('train')}
    # Wall time of this process (training includes the parent's); evaluation includes the
    # Appendix C curves, whose share is also given (_in_threads).
    metrics['wall_time_s'] = {'train': trained - began, 'evaluate': time.time() - trained,
                              'throughout_training': self.throughout_seconds}
    write_summaries(self.run_dir, metrics, self.k)
    self.run_dir.write_results(metrics)
    return metrics

  def _bn_batches(self):
    return bn_batches(self.hparams, self.interp, self.data, self.strategy)

  def _in_threads(self, tasks):
    """[fn(interpolator, reader) for _, fn in tasks], shared among the evaluators, one per
    thread. A task's numbers do not depend on which evaluator computes it (their models are
    of the same config, and each call sets the weights it evaluates). Of this call's wall
    time, the share of the tasks labelled 'throughout' in their busy time is added to
    throughout_seconds (Appendix C's, in metrics['wall_time_s'])."""
    free = queue.Queue()
    for evaluator in self.evaluators:
      free.put(evaluator)
    busy = []  # (label, seconds) per task; appended from the threads

    def run(task):
      label, fn = task
      trainer.check_not_stopped()  # another task failed or Ctrl-C: leave the rest undone
      evaluator = free.get()
      began = time.time()
      try:
        return fn(*evaluator)
      finally:
        busy.append((label, time.time() - began))
        free.put(evaluator)

    began = time.time()
    results = trainer.map_in_threads(run, tasks, len(self.evaluators))
    total = sum(seconds for _, seconds in busy)
    if total:
      share = sum(seconds for label, seconds in busy if label == 'throughout') / total
      self.throughout_seconds += share * (time.time() - began)
    return results

  def _compare(self, weights_a, weights_b, masks, dir_a, dir_b):
    """Interpolation, instability and Appendix G distances between two final networks, and
    the Appendix C rows between their checkpoints."""
    result = {'interpolation': {}, 'instability': {}, 'endpoints': {},
              'distances': {'classification_differences': {}, 'loss_l2': {}}}
    bn_data = self._bn_batches()

    def final(split):
      return lambda interpolator, _: self._final_split(interpolator, weights_a, weights_b,
                                                       split, bn_data)

    # The largest evaluation first, so that the threads run out of work together.
    splits = sorted(SPLITS, key=self.data.eval_count, reverse=True)
    tasks = [('final', final(split)) for split in splits]
    if self.interp.throughout_training:
      alphas = self._throughout_alphas()
      tasks += [('throughout', functools.partial(self._throughout_row, iteration, dir_a, dir_b,
                                                 alphas, bn_data))
                for iteration in self.clock.epoch_ends_after(self.k)]
    outcomes = self._in_threads(tasks)
    by_split = dict(zip(splits, outcomes))
    for split in SPLITS:
      curve, (losses_a, predictions_a, labels), (losses_b, predictions_b, _) = by_split[split]
      errors = [float(np.mean(predictions_a != labels)), float(np.mean(predictions_b != labels))]
      mean_losses = [float(np.mean(losses_a)), float(np.mean(losses_b))]
      result['interpolation'][split] = curve
      result['endpoints'][split] = {'error': errors, 'loss': mean_losses}
      result['instability'][split] = _barriers(curve, result['endpoints'][split])
      result['distances']['classification_differences'][split] = (
          distances.classification_differences(predictions_a, predictions_b))
      result['distances']['loss_l2'][split] = distances.loss_l2_distance(losses_a, losses_b)
    vector_a = distances.kernel_vector(weights_a, masks)
    vector_b = distances.kernel_vector(weights_b, masks)
    result['distances']['l2'] = distances.l2_distance(vector_a, vector_b)
    result['distances']['cosine'] = distances.cosine_distance(vector_a, vector_b)
    if self.interp.throughout_training:
      result['throughout_training'] = outcomes[len(splits):]  # in their iterations' order
    if self.interp.align:  # after every raw number, which it leaves as it is
      result['aligned'] = compare_aligned(self.evaluators[0][0], self.hparams, self.interp,
                                          self.data, weights_a, weights_b, masks, masks, bn_data)
    result['copies'] = [dir_a.name, dir_b.name]
    return result

  def _final_split(self, interpolator, weights_a, weights_b, split, bn_data):
    """(curve, per-example (losses, predictions, labels) of A, the same of B) on `split`."""
    curve = interpolator.curve(weights_a, weights_b, self.alphas, self.data, split,
                               bn_data=bn_data)
    results = [curve]
    for weights in (weights_a, weights_b):
      trainer.check_not_stopped()
      results.append(interpolator.per_example(weights, self.data, split, bn_data))
    return tuple(results)

  def _throughout_alphas(self):
    """(the alphas Appendix C evaluates, how many of them make its curve, the indices of 0
    and 1): the endpoints ride along with the curve, appended unless already there."""
    count = self.interp.throughout_num_alphas or len(self.alphas)
    alphas = list(np.linspace(self.interp.alpha_min, self.interp.alpha_max, count))
    for end in (0.0, 1.0):
      if end not in alphas:
        alphas.append(end)
    return alphas, count, [alphas.index(0.0), alphas.index(1.0)]

  def _throughout_row(self, iteration, dir_a, dir_b, throughout_alphas, bn_data, interpolator,
                      reader):
    """Appendix C at one epoch end: error and loss instability between the copies'
    checkpoints, on the test set and on the first `throughout_train_examples` training
    examples. `throughout_alphas`: what _throughout_alphas gives."""
    alphas, count, ends = throughout_alphas
    weights_a, _ = trainer.weights_at(dir_a, iteration, self.hparams, self.data, reader)
    weights_b, _ = trainer.weights_at(dir_b, iteration, self.hparams, self.data, reader)
    row = {'iteration': iteration, 'epoch': self.clock.epoch(iteration)}
    for split, data in (('test', self.data), ('train', self.throughout_train_data())):
      trainer.check_not_stopped()
      curve = interpolator.curve(weights_a, weights_b, alphas, data, split, bn_data=bn_data)
      for key in ('error', 'loss'):
        values = curve[key][:count]
        row[f'{split}_{key}_instability'] = (
            max(values) - float(np.mean([curve[key][i] for i in ends])))
    return row

  def throughout_train_data(self):
    """The data whose train split Appendix C evaluates: the first examples only."""
    return self.data.with_eval_examples('train', self.interp.throughout_train_examples)

  def _rewind_state(self, initial, rewound, start_weights, finals, masks, final_distance):
    """Appendix B: the error at k and the L2 distances init -> k -> final.

    `error_at_k` is the full network's error at k, as the paper's Figure 11 plots it;
    `masked_error_at_k` is that of the copies' start state (the mask applied; for a
    random-reinit baseline, the mask on its fresh weights)."""
    masked_start = {p: (v * masks[p] if p in masks else v) for p, v in start_weights.items()}
    states = {'error_at_k': rewound, 'masked_error_at_k': masked_start}
    if all(np.array_equal(rewound[p], masked_start[p]) for p in rewound):
      del states['masked_error_at_k']  # unpruned: the start state is the network at k
    bn_data = self._bn_batches()

    def error(name, split):
      def fn(interpolator, _):
        _, predictions, labels = interpolator.per_example(states[name], self.data, split,
                                                          bn_data)
        return float(np.mean(predictions != labels))
      return 'rewind', fn

    keys = [(name, split) for name in states for split in SPLITS]
    errors = dict(zip(keys, self._in_threads([error(*key) for key in keys])))
    error_at_k = {split: errors['error_at_k', split] for split in SPLITS}
    masked_error_at_k = {split: errors.get(('masked_error_at_k', split), error_at_k[split])
                         for split in SPLITS}
    at_init = distances.kernel_vector(initial, masks)
    at_k = distances.kernel_vector(rewound, masks)
    at_start = distances.kernel_vector(start_weights, masks)
    return {'error_at_k': error_at_k, 'masked_error_at_k': masked_error_at_k,
            'l2_init_to_k': distances.l2_distance(at_init, at_k),
            'l2_k_to_final': distances.l2_distance(at_start,
                                                   distances.kernel_vector(finals[0], masks)),
            'l2_final_to_final': final_distance}

def alphas_of(interp):
  return np.linspace(interp.alpha_min, interp.alpha_max, interp.num_alphas)


def bn_batches(hparams, interp, data, strategy):
  """The training batches BatchNorm statistics are recomputed on ('recompute'), or None."""
  if interp.batch_norm != 'recompute':
    return None
  batch_size = hparams.training.batch_size
  return loop.distribute(strategy, lambda replicas, num_replicas: (
      data.train_batches(batch_size, 0, 0, interp.batch_norm_batches, replicas, num_replicas)))


def alignment_images(data, count=ALIGN_EXAMPLES):
  """The first `count` training examples in evaluation order (no augmentation, at most
  the DatasetConfig's train_eval_examples), as a re-iterable dataset of image batches."""
  dataset, _ = data.with_eval_examples('train', count).eval_batches('train', ALIGN_BATCH_SIZE)
  return dataset.map(lambda images, labels, weights: tf.boolean_mask(images, weights > 0))


def _barriers(curve, endpoints):
  return {key: max(curve[key]) - float(np.mean(endpoints[key])) for key in ('error', 'loss')}


def compare_aligned(interpolator, hparams, interp, data, weights_a, weights_b, masks_a,
                    masks_b, bn_data=None):
  """metrics['aligned'] of one pair: method -> the comparison of A and B aligned to A by
  that method (the module docstring). masks_a, masks_b: the copies' masks (kernel path ->
  0/1; all ones for an unpruned network). `interpolator` evaluates the curves (its model is
  overwritten); the matching and REPAIR run on models of their own, outside the strategy."""
  spec = alignment.permutation_spec(hparams.model.name)
  model_a, model_b = (trainer.build_model(hparams, data) for _ in range(2))
  images = alignment_images(data)
  alphas = alphas_of(interp)
  # A's endpoint is the same network for every method.
  ends_a = {split: interpolator.evaluate(weights_a, data, split, bn_data) for split in SPLITS}
  results = {}
  for method in interp.align:
    began = time.time()
    if method == 'weights':
      perms = alignment.weight_matching(spec, weights_a, weights_b, seed=0)
    else:
      perms = alignment.activation_matching(spec, model_a, model_b, images, ALIGN_BATCH_SIZE,
                                            weights_a, weights_b)
    aligned = alignment.apply_permutation(spec, weights_b, perms)
    matched = time.time()
    result = {'interpolation': {}, 'endpoints': {}, 'instability': {}}
    for split in SPLITS:
      curve = interpolator.curve(weights_a, aligned, alphas, data, split, bn_data=bn_data)
      ends = [ends_a[split], interpolator.evaluate(aligned, data, split, bn_data)]
      endpoints = {key: [end[key] for end in ends] for key in ('error', 'loss')}
      result['interpolation'][split] = curve
      result['endpoints'][split] = endpoints
      result['instability'][split] = _barriers(curve, endpoints)
    union = alignment.interpolation_masks(masks_a, alignment.permute_masks(spec, masks_b, perms))
    vector_a = distances.kernel_vector(weights_a, union)
    vector_b = distances.kernel_vector(aligned, union)
    result['distances'] = {'l2': distances.l2_distance(vector_a, vector_b),
                           'cosine': distances.cosine_distance(vector_a, vector_b)}
    evaluated = time.time()
    if interp.repair:
      stats = [alignment.layer_statistics(spec, model_a, w, images, ALIGN_BATCH_SIZE)
               for w in (weights_a, aligned)]
      curves = {split: {'loss': [], 'error': []} for split in SPLITS}
      for alpha in alphas:
        repaired = alignment.repair(spec, model_a, weights_a, aligned, alpha, images, *stats,
                                    batch_size=ALIGN_BATCH_SIZE)
        for split in SPLITS:
          values = interpolator.evaluate(repaired, data, split)
          for key in ('loss', 'error'):
            curves[split][key].append(values[key])
      result['repaired'] = {
          'interpolation': curves,
          'instability': {split: _barriers(curves[split], result['endpoints'][split])
                          for split in SPLITS}}
    result['wall_time_s'] = {'match': matched - began, 'evaluate': evaluated - matched,
                             'repair': time.time() - evaluated}
    results[method] = result
  return results


def align_finished(run_dir, data, methods, repair, strategy=None, jit_compile=False):
  """The `aligned` metrics of a finished analysis in `run_dir` (by `compare_aligned`, as
  the analysis computes them), for its copies' pairs averaged as metrics.json's are, and
  per pair where there are more than two copies. `jit_compile`: evaluate XLA-compiled, as
  an analysis run with RunOptions.jit_compile = True did (the last bits differ otherwise)."""
  run_dir = store.RunDir(run_dir)
  if not run_dir.finished():
    raise UserError(f'{run_dir} holds no finished instability analysis: run lmc_tf.instability '
                    'there first, or give the directory of one')
  found = run_dir.read_json(store.HPARAMS)
  lineage = found.get('lineage') or {}
  if lineage.get('analysis') != 'instability':
    raise UserError(f'{run_dir} is not an instability analysis: give the directory of one '
                    '(it holds copy_0, copy_1 and metrics.json)')
  hparams = config_lib.Hparams.from_dict(found)
  interp = dataclasses.replace(
      config_lib.config_from_dict(config_lib.InterpolationConfig, lineage['interpolation']),
      align=tuple(methods), repair=bool(repair))
  check_interpolation(interp, hparams.model.name)
  if not interp.align:
    raise UserError('no alignment asked: give --align=weights,activations (or one of them)')
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = trainer.build_model(hparams, data)
  interpolator = interpolation.Interpolator(model, strategy, jit_compile)
  copies = [run_dir.file(name) for name in run_dir.metrics()['copies']]
  copies = [store.RunDir(path) for path in copies]
  finals = [copy.read_arrays(store.WEIGHTS) for copy in copies]
  # As in Analysis._run: the copies' masks, or all ones for the unpruned network.
  masks = [copy.read_arrays(store.MASK) if copy.exists(store.MASK) else masking.get_masks(model)
           for copy in copies]
  bn_data = bn_batches(hparams, interp, data, strategy)
  pairs = [{'aligned': compare_aligned(interpolator, hparams, interp, data, finals[i],
                                       finals[j], masks[i], masks[j], bn_data),
            'copies': [copies[i].name, copies[j].name]}
           for i, j in itertools.combinations(range(len(finals)), 2)]
  return {'aligned': _mean_over_pairs(pairs)['aligned'],
          'pairs': pairs if len(pairs) > 1 else [],
          'alphas': [float(a) for a in alphas_of(interp)],
          'align': list(interp.align), 'repair': interp.repair,
          'examples': data.with_eval_examples('train', ALIGN_EXAMPLES).eval_count('train')}


def write_summaries(run_dir, metrics, k):
  """The analysis' numbers as TensorBoard summaries: curves over alpha (step = 1000 alpha),
  the barriers and distances at step k, tables, a plot and a Custom Scalars layout."""
  summaries.write_analysis(run_dir.path, metrics, k)


def _mean_over_pairs(pairs):
  """The pairs' results averaged leaf by leaf (lists elementwise); one pair: itself."""
  def mean(values):
    first = values[0]
    if isinstance(first, dict):
      return {key: mean([v[key] for v in values]) for key in first}
    if isinstance(first, list):
      if first and isinstance(first[0], (dict, str)):
        return first if isinstance(first[0], str) else [mean(list(items)) for items in zip(*values)]
      return [float(np.mean(items)) for items in zip(*values)]
    if isinstance(first, str):
      return first
    return float(np.mean(values))
  pairs = [{k: v for k, v in pair.items() if k != 'copies'} for pair in pairs]
  return pairs[0] if len(pairs) == 1 else mean(pairs)

"""Lottery tickets: IMP with rewinding, one-shot pruning, random pruning and random reinit.

Layout under the model directory (store.RunDir.level):
  level_00/                      the unpruned network, trained from init (checkpointed at k)
  level_NN/                      the IMP subnetwork of level NN: W_k masked, trained k -> T
  level_NN_random_pruning/       a random mask with level NN's per-layer counts, W_k, k -> T
  level_NN_random_reinit/        level NN's mask on freshly drawn weights, k -> T
  lottery.json                   per baseline ('imp' too) and level: density, final metrics
Each level directory is a run directory with mask.npz and sparsity.json.

A baseline names how a subnetwork of a level is made: 'imp' (the level's own IMP
mask on the weights at k), 'random_pruning' or 'random_reinit'.
"""
import dataclasses

from absl import logging
import numpy as np
import tensorflow as tf

from lmc_tf import io_utils
from lmc_tf import plots
from lmc_tf import store
from lmc_tf.errors import UserError
from lmc_tf.models import masking
from lmc_tf.pruning import rules
from lmc_tf.training import trainer

OUTPUT_LAYER = 'fc_out/kernel'
AUXILIARY_HEAD = 'aux_'  # Inception-v3's auxiliary classifier: its layers' name prefix
BASELINES = ('random_pruning', 'random_reinit')


def output_layers(paths):
  """The kernels PruningConfig.prune_output_layer = False keeps whole: the output layer and
  an auxiliary head, which likewise only feeds a classifier's logits."""
  return tuple(p for p in paths if p == OUTPUT_LAYER or p.startswith(AUXILIARY_HEAD))


def baseline_seed(seed, init_seed, level):
  """The seed of level `level`'s random-pruning mask and random-reinit weights: an
  independent draw for every (PruningConfig.baseline_seed, init seed, level), so that
  replicates over init seeds are independent replicates of the baselines too."""
  return int(np.random.SeedSequence([seed, init_seed, level]).generate_state(1)[0])


def level_of_mask(run_dir):
  """The IMP level whose run (a store.RunDir) wrote a mask, or None."""
  return run_dir.lineage().get('level')


def start_state(baseline, rewound, masks, hparams, data, seed):
  """(weights, masks) a subnetwork starts from at k: the IMP mask on the rewound weights,
  a random mask with the same per-layer counts, or the mask on fresh weights (seeded)."""
  if baseline == 'imp':
    return rewound, masks
  if baseline == 'random_pruning':
    return rewound, rules.random_masks(masks, seed)
  if baseline == 'random_reinit':
    fresh = dataclasses.replace(hparams, training=dataclasses.replace(hparams.training,
                                                                      init_seed=seed))
    return trainer.weights_dict(trainer.build_model(fresh, data)), masks
  raise UserError(f'unknown baseline {baseline!r}: choose imp or one of {", ".join(BASELINES)}')


class Lottery:
  """Runs IMP levels (and baselines) for one network config in one model directory."""

  def __init__(self, hparams, options, pruning, model_dir, data, strategy=None, dense_dir=None):
    self.hparams, self.options, self.pruning = hparams, options, pruning
    self.run_dir, self.data, self.strategy = store.RunDir(model_dir), data, strategy
    # Level 0 may live elsewhere, shared with other lotteries of the same network.
    self.dense_dir = store.RunDir(dense_dir) if dense_dir else self.run_dir.level(0)
    check_pruning(pruning)
    self.rewind_iteration = trainer.check_config(hparams, options, data).rewinding_point(
        pruning.rewind)
    self.writer = None
    self.summary = {}

  def excluded(self, masks):
    """The kernels of `masks` left out of pruning (PruningConfig.prune_output_layer)."""
    return () if self.pruning.prune_output_layer else output_layers(masks)

  def check_plan(self, levels, target_density):
    """Refuses, before anything trains, a plan whose last level leaves no weights in a layer."""
    if levels == 0:
      return
    ones = masking.get_masks(trainer.build_model(self.hparams, self.data))
    paths = [p for p in ones if p not in self.excluded(ones)]
    def kept(count):
      if self.pruning.style == 'one_shot':
        return int(round(target_density * count))
      return rules.kept_count(count, self.pruning.fraction, levels)
    if self.pruning.scope == 'global':
      short = kept(sum(ones[p].size for p in paths)) < len(paths)
    else:
      short = any(kept(ones[p].size) < 1 for p in paths)
    if short:
      raise UserError(f'pruning to level {levels} would leave a layer with no weights: choose '
                      'a higher target density or fewer levels')

  def _lineage(self, level, baseline):
    # 'variant' is the baseline's key in the hparams.json of every level run ever written.
    return {'level': level, 'variant': baseline, 'rewind_iteration': self.rewind_iteration,
            'pruning': dataclasses.asdict(self.pruning)}

  def train_dense(self):
    """Level 0: the unpruned network from init, checkpointed at the rewinding point."""
    tf.io.gfile.makedirs(self.run_dir.path)
    options = dataclasses.replace(self.options, checkpoint_at=tuple(
        self.options.checkpoint_at) + (f'{self.rewind_iteration}it',))
    metrics = trainer.train(self.hparams, options, self.dense_dir, self.data, self.strategy)
    self._record(0, 'imp', None, metrics)
    return metrics

  def masks_for_level(self, level, target_density=None):
    """The IMP masks of `level`, from the trained weights of level - 1 (or level 0 one-shot)."""
    previous_masks = self._level_masks(level - 1)
    ones = {p: np.ones_like(m) for p, m in previous_masks.items()}
    excluded = self.excluded(ones)
    if self.pruning.style == 'one_shot':
      weights = self.dense_dir.read_arrays(store.WEIGHTS)
      return rules.one_shot_masks(weights, ones, target_density, self.pruning.scope, excluded)
    weights = self.level_dir(level - 1).read_arrays(store.WEIGHTS)
    return rules.imp_masks(weights, previous_masks, ones, self.pruning.fraction,
                           level, self.pruning.scope, excluded)

  def _level_masks(self, level):
    if level == 0:
      _, masks = trainer.weights_at(self.dense_dir, 0, self.hparams, self.data)
      return masks
    return self.level_dir(level).read_arrays(store.MASK)

  def level_dir(self, level, baseline='imp'):
    return self.dense_dir if level == 0 else self.run_dir.level(level, baseline)

  def train_level(self, level, masks, baseline='imp'):
    """Trains the subnetwork of `level` (or one of its baselines) from the rewinding point."""
    rewound, _ = trainer.weights_at(self.dense_dir, self.rewind_iteration, self.hparams,
                                    self.data)
    weights, masks = start_state(baseline, rewound, masks, self.hparams, self.data,
                                 baseline_seed(self.pruning.baseline_seed,
                                               self.hparams.training.init_seed, level))
    directory = self.level_dir(level, baseline)
    metrics = trainer.train(self.hparams, self.options, directory, self.data, self.strategy,
                            start=trainer.Start(weights, masks, self.rewind_iteration),
                            lineage=self._lineage(level, baseline))
    report = rules.layer_report(masks)
    directory.write_json(store.SPARSITY, report)
    self._record(level, baseline, report, metrics)
    return metrics

  def _record(self, level, baseline, report, metrics):
    density = 1.0 if report is None else report['total']['density']
    self.summary.setdefault(baseline, {})[str(level)] = dict(metrics, density=density)
    self.run_dir.write_json(store.LOTTERY, self.summary)
    if self.writer is None:
      self.writer = io_utils.summary_writer(self.run_dir.path)
    with self.writer.as_default(step=level):
      tf.summary.scalar(f'{baseline}/test_error', metrics['test_error'])
      tf.summary.scalar(f'{baseline}/density', density)
      if report is not None and baseline == 'imp':
        for path, row in report['layers'].items():
          tf.summary.scalar(f'imp_layer_density/{path}', row['density'])
        tf.summary.image('imp/layer_densities', plots.image_tensor(plots.density_chart(
            report, f'level {level}: density {density:.4f}')))
    self.writer.flush()
    logging.info('%s level %d: density %.4f, test error %.4f', baseline, level, density,
                 metrics['test_error'])


def check_pruning(pruning):
  """Refuses a PruningConfig that IMP cannot run, before anything trains."""
  if pruning.style not in ('iterative', 'one_shot'):
    raise UserError(f'unknown PruningConfig.style {pruning.style!r}: choose iterative or '
                    'one_shot')
  if pruning.scope not in ('global', 'layerwise'):
    raise UserError(f'unknown PruningConfig.scope {pruning.scope!r}: choose global or '
                    'layerwise')
  if not 0.0 < pruning.fraction < 1.0:
    raise UserError(f'PruningConfig.fraction {pruning.fraction} is outside (0, 1): give the '
                    'fraction of remaining weights pruned per level, e.g. 0.2')


def run(hparams, options, pruning, model_dir, data, strategy=None, levels=None,
        target_density=None, baselines=(), baseline_levels=None, dense_dir=None):
  """IMP to `levels` levels (or to `target_density`), with baselines at `baseline_levels`."""
  if (levels is None) == (target_density is None):
    raise UserError('give exactly one of --levels and --target_density (without either, '
                    'lmc_tf.imp uses PruningConfig.target_density)')
  if target_density is not None:
    rules.check_density(target_density)
    levels = (1 if pruning.style == 'one_shot' else
              rules.levels_for_density(target_density, pruning.fraction))
  elif pruning.style == 'one_shot':
    raise UserError('one-shot pruning needs --target_density')
  if levels < 0:
    raise UserError(f'--levels={levels} is negative: give 0 or more')
  for baseline in baselines:
    if baseline not in BASELINES:
      raise UserError(f'unknown baseline {baseline!r}: choose from {", ".join(BASELINES)}')
  lottery = Lottery(hparams, options, pruning, model_dir, data, strategy, dense_dir)
  lottery.check_plan(levels, target_density)
  lottery.train_dense()
  for level in range(1, levels + 1):
    masks = lottery.masks_for_level(level, target_density)
    lottery.train_level(level, masks)
    if baseline_levels is None or level in baseline_levels:
      for baseline in baselines:
        lottery.train_level(level, masks, baseline)
  return lottery.summary

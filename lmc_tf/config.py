"""The hyperparameters of a run, bound with gin.

`Hparams` (dataset, model, training) is everything that determines a run's
weights and reported numbers; it is written to `hparams.json` in the run
directory, and a directory holding different hparams is never reused.
`RunOptions` changes only logistics (logging, checkpoint spacing) and can differ
between a run and its resumption.
"""
import copy
import dataclasses
import json
import re
from typing import Optional, Tuple

import gin

from lmc_tf.errors import UserError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  name: str = gin.REQUIRED
  # Train on the first N training examples only (None: all). For tests.
  train_subset: Optional[int] = None
  # Evaluate on the first N test / train examples (None: all).
  test_eval_examples: Optional[int] = None
  train_eval_examples: Optional[int] = None
  # Side length of ImageNet crops (224 for ResNet-50, 299 for Inception-v3).
  image_size: Optional[int] = None
  # Random images and labels of the dataset's shape (smoke tests of configs whose data is not here).
  synthetic: bool = False


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  # A registry name such as 'lenet_300_100', 'cifar_resnet_20', 'cifar_resnet_56_32',
  # 'cifar_vgg_16', 'resnet_50', 'inception_v3'.
  name: str = gin.REQUIRED


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  batch_size: int = gin.REQUIRED
  training_steps: str = gin.REQUIRED  # '24000it', '90ep'
  optimizer: str = 'sgd'  # 'sgd' (with momentum) or 'adam'
  lr: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 0.0  # coupled L2, added to every gradient as in PyTorch's SGD
  lr_schedule: str = 'constant'  # 'constant', 'step' or 'linear'
  milestones: Tuple[str, ...] = ()  # 'step': multiply by gamma at each of these
  gamma: float = 0.1
  final_lr: float = 0.0  # 'linear': the rate reached at the end of training
  warmup: str = '0it'  # linear warmup from 0 over this many steps
  aux_loss_weight: float = 0.4  # weight of auxiliary logits (Inception-v3)
  init_seed: int = 0
  data_order_seed: int = 0
  # 'mixed_bfloat16': layers compute in bfloat16 (TPUs' and AMX CPUs' native type) while the
  # weights, optimizer, masks and loss stay float32; evaluation of the analyses and the
  # interpolation run in float32. No loss scaling: bfloat16 has float32's exponent range.
  precision: str = 'float32'


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunOptions:
  eval_every: str = '1ep'  # test-set evaluation interval for TensorBoard
  log_every: str = '100it'  # train summaries and progress lines; bounds the compiled loop length
  checkpoint_at: Tuple[str, ...] = ()  # rewinding points, kept besides one per epoch and the end
  checkpoint_every_epoch: bool = True
  deterministic: bool = True  # tf.config.experimental.enable_op_determinism
  # XLA-compile what runs on each replica (train step, evaluation, interpolation), as a TPU
  # always does; a network without convolutions on in-memory data under the default strategy
  # compiles its whole train loop (Run.gathers_batches). None: compiled where that was
  # measured to pay, such a whole train loop (LeNet), not convolutional networks and no
  # evaluation (trainer.compiles). Training differs from uncompiled in the last bits from the
  # first step and diverges from there, as two data orders do; a run may resume under the
  # other setting.
  jit_compile: Optional[bool] = None
  # An instability analysis trains its copies at the same time, one Python thread each
  # (TensorFlow runs both on the shared thread pools), and shares its evaluations (the final
  # copies', Appendix C's epochs, Appendix B's errors) among as many threads, under the default
  # strategy (one device, one process); otherwise one after the other. The numbers are the same
  # either way. The first error or Ctrl-C in one thread stops the others at their next chunk
  # of steps or next evaluation.
  parallel_copies: bool = True


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PruningConfig:
  fraction: float = 0.2  # of the remaining weights, per IMP level
  scope: str = 'global'  # 'global' across all prunable layers, or 'layerwise'
  # The output layer (and Inception-v3's auxiliary head) pruned like the rest, or kept whole.
  prune_output_layer: bool = True
  # Where lmc_tf.imp prunes to when neither --levels nor --target_density is given: the
  # level nearest this density (or one round to it, one-shot). Each gin file sets the paper's.
  target_density: Optional[float] = None
  rewind: str = '0it'  # k: surviving weights go back to their values at this point
  style: str = 'iterative'  # or 'one_shot': a single round to the target density
  # Seeds the random-pruning masks and the random-reinit weights (never 0..N, the usual seeds).
  baseline_seed: int = 1000


@gin.configurable
@dataclasses.dataclass(frozen=True)
class InterpolationConfig:
  num_alphas: int = 30
  alpha_min: float = 0.0  # below 0 or above 1 extrapolates beyond the copies
  alpha_max: float = 1.0
  batch_norm: str = 'interpolate'  # or 'recompute' on training data at each alpha
  batch_norm_batches: int = 50  # training batches for 'recompute'
  throughout_training: bool = True  # Appendix C: interpolate the copies at every epoch
  # Appendix C on the train set uses its first N examples (at most the train evaluation set).
  throughout_train_examples: int = 10000
  # Appendix C's curves at this many alphas from alpha_min to alpha_max (0: num_alphas), to
  # make them cheaper; the final curves keep num_alphas.
  throughout_num_alphas: int = 0
  stable_threshold: float = 0.02  # stable: test error instability below this
  # Beyond the paper: also compare the copies after aligning copy B's hidden units to A's
  # by 'weights' (weight matching) and/or 'activations' (activation matching on the first
  # 5000 training examples), metrics.json's `aligned` (lmc_tf/analysis/alignment.py).
  align: Tuple[str, ...] = ()
  repair: bool = False  # with align: also each alignment's REPAIRed interpolation curve


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SweepConfig:
  init_seeds: Tuple[int, ...] = (0,)
  # Data-order seeds of the two copies of each analysis; one analysis per pair and init.
  copy_seeds: Tuple[Tuple[int, int], ...] = ((1, 2),)
  rewind_points: Tuple[str, ...] = ('0it',)
  levels: Tuple[int, ...] = (0,)  # IMP levels to analyse; 0 is the unpruned network
  baselines: Tuple[str, ...] = ()  # 'random_pruning', 'random_reinit': trained and analysed
  analyze: bool = True  # False: only train the IMP levels and baselines (Appendix A)


@dataclasses.dataclass(frozen=True)
class Hparams:
  dataset: DatasetConfig
  model: ModelConfig
  training: TrainingConfig

  def to_dict(self):
    """Plain JSON types (tuples become lists), so it compares equal to a loaded hparams.json."""
    return as_json(dataclasses.asdict(self))

  @classmethod
  def from_dict(cls, values):
    """The Hparams a hparams.json holds (its 'lineage' is left out); fields added since it
    was written take their defaults."""
    return cls(*(config_from_dict(section, values.get(key) or {})
                 for key, section in (('dataset', DatasetConfig), ('model', ModelConfig),
                                      ('training', TrainingConfig))))

  @classmethod
  def from_gin(cls):
    try:
      return cls(DatasetConfig(), ModelConfig(), TrainingConfig())
    except RuntimeError as e:  # how gin reports a gin.REQUIRED field left unbound
      missing = re.search(r"Required bindings for `(\w+)` not provided in config: \['(\w+)'",
                          str(e))
      if not missing:
        raise
      owner, key = missing.groups()
      raise UserError(f'{owner}.{key} is not set: bind it in a --gin_file or with '
                      f'--gin_bindings="{owner}.{key} = ..."') from e


def as_json(value):
  """`value` in plain JSON types (tuples become lists), as a JSON file reads back."""
  return json.loads(json.dumps(value))


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def config_from_dict(cls, values):
  """A config dataclass from its JSON dict (lists become tuples); a field it does not
  know is a UserError (a file of a newer lmc_tf)."""
  names = {field.name for field in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise UserError(f'{cls.__name__} has no fields {unknown[:3]}: read this run with the '
                    'lmc_tf version that wrote it')
  return cls(**{key: _tuples(value) for key, value in values.items()})


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return out


def with_later_defaults(found, asked):
  """A loaded hparams dict given the config fields that `asked` has and it lacks, at their
  defaults: fields added after it was written, left at their defaults, change nothing (as
  in the run hashes)."""
  filled = copy.deepcopy(found)
  sections = [(('dataset',), DatasetConfig), (('model',), ModelConfig),
              (('training',), TrainingConfig), (('lineage', 'interpolation'), InterpolationConfig)]
  for keys, cls in sections:
    mine, theirs = filled, asked
    for key in keys:
      mine = mine.get(key) if isinstance(mine, dict) else None
      theirs = theirs.get(key) if isinstance(theirs, dict) else None
    if not (isinstance(mine, dict) and isinstance(theirs, dict)):
      continue
    for field in dataclasses.fields(cls):
      if (field.name in theirs and field.name not in mine and
          field.default not in (dataclasses.MISSING, gin.REQUIRED)):
        mine[field.name] = as_json(field.default)
  return filled


def differences(a, b):
  """Lists 'key: a vs b' for the leaves where two hparams dicts differ."""
  flat_a, flat_b = _flatten(a), _flatten(b)
  return [f'{k}: {flat_a.get(k)!r} vs {flat_b.get(k)!r}'
          for k in sorted(set(flat_a) | set(flat_b)) if flat_a.get(k) != flat_b.get(k)]

"""Who writes in a multi-worker job, and how its workers stay in step.

In a multi-worker job every worker runs the same program and the same
collective steps, reads the run directories, and makes the same decisions
from them; only the chief writes results (io_utils), summaries and
checkpoints, so files are never written twice. `barrier` lets the others wait
until the chief's writes are done before they read them; `chief_decides`
takes a decision from files once, for everybody, so workers never part ways.
Outside a multi-worker job both are no-ops.
"""
import tensorflow as tf

_chief = True
_chief_flags = {}


def set_chief(chief):
  global _chief
  _chief = chief


def is_chief():
  return _chief


def chief_decides(strategy, flag):
  """The chief's `flag` on every worker of a multi-worker job (`flag` elsewhere)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return flag
  if strategy not in _chief_flags:
    _chief_flags[strategy] = tf.function(lambda value: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: value), axis=None))
  # Only the chief's replicas add their flag: the sum is positive iff the chief's is set.
  return bool(_chief_flags[strategy](tf.constant(float(flag and _chief))).numpy() > 0)


def barrier(strategy):
  """Returns once every worker of a multi-worker job has called it (a tiny all-reduce)."""
  chief_decides(strategy, False)

"""The one place that builds a tf.distribute strategy from --strategy and --tpu.

A multi-worker strategy also tells lmc_tf.workers whether this task is the chief.
"""
from absl import logging
import tensorflow as tf

from lmc_tf import workers
from lmc_tf.errors import UserError

STRATEGIES = ('default', 'mirrored', 'multi_worker', 'tpu')


def make_strategy(name='default', tpu=None):
  strategy = _build(name, tpu)
  logging.info('strategy %s: %d replicas', name, strategy.num_replicas_in_sync)
  return strategy


def _build(name, tpu):
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker':
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    workers.set_chief(_is_chief_task(strategy.cluster_resolver))
    return strategy
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or 'local')
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise UserError(f'unknown strategy {name!r}: choose one of {", ".join(STRATEGIES)}')


def is_default(strategy):
  """Whether `strategy` is TensorFlow's default one: one device, one replica, no input
  pipelines to distribute."""
  return not isinstance(strategy, (tf.distribute.MirroredStrategy,
                                   tf.distribute.MultiWorkerMirroredStrategy,
                                   tf.distribute.TPUStrategy))


def _is_chief_task(resolver):
  """Whether this task writes: the 'chief' task, or worker 0 of a cluster without one."""
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None or task_type == 'chief':
    return True
  return task_type == 'worker' and task_id == 0 and 'chief' not in resolver.cluster_spec().jobs


def split_cpu(devices):
  """Splits the host CPU into `devices` logical devices, so mirrored runs on a CPU (tests,
  benchmarks). Must run before TensorFlow initializes its devices."""
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])

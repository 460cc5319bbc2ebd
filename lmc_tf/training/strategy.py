"""The one place that builds a tf.distribute strategy from --strategy and --tpu."""
import tensorflow as tf

from lmc_tf.errors import UserError

STRATEGIES = ('default', 'mirrored', 'multi_worker', 'tpu')


def make_strategy(name='default', tpu=None):
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker':
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or 'local')
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise UserError(f'unknown strategy {name!r}: choose one of {", ".join(STRATEGIES)}')

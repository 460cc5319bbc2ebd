"""LeNet-300-100 and other fully connected networks: 'lenet_300_100' means hidden layers 300, 100."""
import tensorflow as tf

from lmc_tf.models import layers


def build(hidden, input_shape, num_classes):
  inputs = tf.keras.Input(input_shape, name='images')
  x = tf.keras.layers.Flatten(name='flatten')(inputs)
  for i, units in enumerate(hidden):
    x = layers.dense(units, f'fc{i + 1}', activation='relu')(x)
  logits = layers.dense(num_classes, 'fc_out')(x)
  return tf.keras.Model(inputs, logits, name='lenet_' + '_'.join(map(str, hidden)))

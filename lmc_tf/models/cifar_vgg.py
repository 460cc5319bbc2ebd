"""CIFAR VGG-11/13/16/19 with BatchNorm and one dense output layer ('cifar_vgg_16').

The plans are Simonyan & Zisserman's convolutional stacks without the last
max-pool; a 2x2 average pool then feeds a 512 -> classes dense layer, as in
OpenLTH's cifar_vgg.
"""
import tensorflow as tf

from lmc_tf.errors import UserError
from lmc_tf.models import layers

PLANS = {
    11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512],
    13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512],
    16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512],
    19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512],
}


def build(depth, input_shape, num_classes):
  if depth not in PLANS:
    raise UserError(f'no CIFAR VGG of depth {depth}: choose one of {sorted(PLANS)}')
  inputs = tf.keras.Input(input_shape, name='images')
  x = inputs
  conv_index = 0
  for entry in PLANS[depth]:
    if entry == 'M':
      x = tf.keras.layers.MaxPool2D(2)(x)
      continue
    conv_index += 1
    x = layers.conv(entry, 3, name=f'conv{conv_index}')(x)
    x = tf.keras.layers.ReLU()(layers.batch_norm(f'bn{conv_index}')(x))
  x = tf.keras.layers.AveragePooling2D(2)(x)
  x = tf.keras.layers.Flatten()(x)
  logits = layers.dense(num_classes, 'fc_out')(x)
  return tf.keras.Model(inputs, logits, name=f'cifar_vgg_{depth}')

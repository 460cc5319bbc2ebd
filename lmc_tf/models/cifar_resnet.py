"""CIFAR ResNets of He et al. (2016), depth 6n+2: 'cifar_resnet_20' (width 16) or 'cifar_resnet_56_32'.

Three stages of n basic blocks with width, 2*width and 4*width filters; a
1x1-convolution shortcut where the shape changes (as in OpenLTH's CIFAR
ResNets); global average pooling; one dense output layer.
"""
import tensorflow as tf

from lmc_tf.errors import UserError
from lmc_tf.models import layers


def build(depth, width, input_shape, num_classes):
  if depth < 8 or (depth - 2) % 6:
    raise UserError(f'CIFAR ResNet depth {depth} is not 6n+2 (20, 32, 44, 56, 110, ...)')
  blocks = (depth - 2) // 6
  inputs = tf.keras.Input(input_shape, name='images')
  x = layers.conv(width, 3, name='conv')(inputs)
  x = tf.keras.layers.ReLU()(layers.batch_norm('bn')(x))
  for stage in range(3):
    filters = width * 2**stage
    for block in range(blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      name = f'stage{stage + 1}_block{block + 1}'
      y = layers.conv(filters, 3, stride, name=f'{name}_conv1')(x)
      y = tf.keras.layers.ReLU()(layers.batch_norm(f'{name}_bn1')(y))
      y = layers.conv(filters, 3, name=f'{name}_conv2')(y)
      y = layers.batch_norm(f'{name}_bn2')(y)
      shortcut = x
      if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.conv(filters, 1, stride, name=f'{name}_shortcut_conv')(x)
        shortcut = layers.batch_norm(f'{name}_shortcut_bn')(shortcut)
      x = tf.keras.layers.ReLU()(y + shortcut)
  x = tf.keras.layers.GlobalAveragePooling2D(name='pool')(x)
  logits = layers.dense(num_classes, 'fc_out')(x)
  return tf.keras.Model(inputs, logits, name=f'cifar_resnet_{depth}_{width}')

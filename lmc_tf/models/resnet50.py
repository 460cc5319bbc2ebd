"""ResNet-50 for ImageNet (He et al. 2016; stride on the 3x3 convolution, no convolution biases)."""
import tensorflow as tf

from lmc_tf.models import layers

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


def build(input_shape, num_classes):
  inputs = tf.keras.Input(input_shape, name='images')
  x = layers.conv(64, 7, 2, name='conv')(inputs)
  x = tf.keras.layers.ReLU()(layers.batch_norm('bn')(x))
  # Zeros pad as PyTorch's -inf padding does here: the pool follows a ReLU.
  x = layers.padded(tf.keras.layers.MaxPool2D(3, 2), 1, 'pool1')(x)
  for stage, (filters, blocks) in enumerate(STAGES):
    for block in range(blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      name = f'stage{stage + 1}_block{block + 1}'
      y = layers.conv(filters, 1, name=f'{name}_conv1')(x)
      y = tf.keras.layers.ReLU()(layers.batch_norm(f'{name}_bn1')(y))
      y = layers.conv(filters, 3, stride, name=f'{name}_conv2')(y)
      y = tf.keras.layers.ReLU()(layers.batch_norm(f'{name}_bn2')(y))
      y = layers.conv(4 * filters, 1, name=f'{name}_conv3')(y)
      y = layers.batch_norm(f'{name}_bn3')(y)
      shortcut = x
      if block == 0:
        shortcut = layers.conv(4 * filters, 1, stride, name=f'{name}_shortcut_conv')(x)
        shortcut = layers.batch_norm(f'{name}_shortcut_bn')(shortcut)
      x = tf.keras.layers.ReLU()(y + shortcut)
  x = tf.keras.layers.GlobalAveragePooling2D(name='pool')(x)
  logits = layers.dense(num_classes, 'fc_out')(x)
  return tf.keras.Model(inputs, logits, name='resnet_50')

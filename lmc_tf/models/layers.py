"""Shared layer settings: PyTorch-style initialization and BatchNorm constants."""
import math

import tensorflow as tf

def kaiming_normal():
  """Kaiming-normal (fan-in, untruncated), the initializer of OpenLTH's models."""
  return tf.keras.initializers.VarianceScaling(2.0, 'fan_in', 'untruncated_normal')


def conv(filters, kernel, stride=1, name=None):
  """A convolution without bias, padded as PyTorch pads it: (kernel - 1) // 2 zeros on every
  side. TensorFlow's 'same' agrees at stride 1, but at stride 2 on an even size it pads only
  after the image, which moves every strided layer's sampling grid by one pixel
  (tests/reference/test_equivalence.py measures it against OpenLTH's and torchvision's)."""
  layer = tf.keras.layers.Conv2D(filters, kernel, strides=stride,
                                 padding='same' if stride == 1 else 'valid', use_bias=False,
                                 kernel_initializer=kaiming_normal(), name=name)
  if stride == 1 or kernel == 1:
    return layer
  return padded(layer, (kernel - 1) // 2, name)


def padded(layer, pad, name=None):
  """`layer` applied after `pad` zeros on every side of the image."""
  padding = tf.keras.layers.ZeroPadding2D(pad, name=f'{name}_pad' if name else None)
  return lambda x: layer(padding(x))


def batch_norm(name=None, epsilon=1e-5):
  # momentum 0.9 and epsilon 1e-5 are PyTorch's BatchNorm defaults (momentum 0.1 there).
  return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=epsilon, name=name)


def dense(units, name, activation=None):
  """A dense layer as torch's nn.Linear starts in OpenLTH: Kaiming-normal kernel (OpenLTH's
  initializer sets weights only) and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), nn.Linear's
  default. Called on its input, whose last dimension is the fan-in."""
  def apply(x):
    bound = 1.0 / math.sqrt(int(x.shape[-1]))
    return tf.keras.layers.Dense(
        units, activation=activation, kernel_initializer=kaiming_normal(),
        bias_initializer=tf.keras.initializers.RandomUniform(-bound, bound), name=name)(x)
  return apply

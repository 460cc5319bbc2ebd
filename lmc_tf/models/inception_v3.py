"""Inception-v3 (Szegedy et al. 2016) with its auxiliary classifier.

The trunk is tf.keras.applications.InceptionV3 (untrained); the auxiliary
head on `mixed7` (5x5 average pool stride 3, 1x1 conv 128, 5x5 conv 768,
dense) is added here because the paper's 27.1M weights include it. The model
returns [logits, aux_logits]; the loss weighs the auxiliary logits by
TrainingConfig.aux_loss_weight and evaluation uses the main logits.
"""
import tensorflow as tf

from lmc_tf.models import layers


class _PaddedAveragePooling(tf.keras.layers.Layer):
  """A 3x3 stride-1 average over the image padded with zeros, which count: torchvision's
  avg_pool2d(x, 3, 1, padding=1). Keras' padding='same' pool leaves the padding out of the
  border windows' averages."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.padding = tf.keras.layers.ZeroPadding2D(1)
    self.pool = tf.keras.layers.AveragePooling2D(3, strides=1, padding='valid')

  def call(self, inputs):
    return self.pool(self.padding(inputs))


def _copy_layer(layer):
  if (isinstance(layer, tf.keras.layers.AveragePooling2D) and layer.padding == 'same' and
      tuple(layer.strides) == (1, 1)):
    return _PaddedAveragePooling(name=layer.name)
  return layer.__class__.from_config(layer.get_config())


def build(input_shape, num_classes):
  keras_trunk = tf.keras.applications.InceptionV3(include_top=False, weights=None,
                                                  input_shape=input_shape, pooling='avg')
  # The same network with torchvision's branch pools, and the same initial weights.
  trunk = tf.keras.models.clone_model(keras_trunk, clone_function=_copy_layer)
  trunk.set_weights(keras_trunk.get_weights())
  for layer in trunk.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization):
      # torchvision's BatchNorm2d(momentum=0.1) keeps 90% of the moving statistics per step;
      # Keras' InceptionV3 keeps its default 99%. (Its epsilon, 1e-3, is torchvision's.)
      layer.momentum = 0.9
  features = trunk.output
  logits = layers.dense(num_classes, 'fc_out')(features)
  aux = tf.keras.layers.AveragePooling2D(5, strides=3, name='aux_pool')(
      trunk.get_layer('mixed7').output)
  aux = layers.conv(128, 1, name='aux_conv1')(aux)
  # epsilon 1e-3, as torchvision's auxiliary head (and the trunk) has it.
  aux = tf.keras.layers.ReLU()(layers.batch_norm('aux_bn1', 1e-3)(aux))
  aux = tf.keras.layers.Conv2D(768, 5, padding='valid', use_bias=False,
                               kernel_initializer=layers.kaiming_normal(), name='aux_conv2')(aux)
  aux = tf.keras.layers.ReLU()(layers.batch_norm('aux_bn2', 1e-3)(aux))
  aux = tf.keras.layers.GlobalAveragePooling2D(name='aux_global_pool')(aux)
  aux_logits = layers.dense(num_classes, 'aux_fc_out')(aux)
  return tf.keras.Model(trunk.input, [logits, aux_logits], name='inception_v3')

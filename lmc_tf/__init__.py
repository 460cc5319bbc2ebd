"""lmc_tf: linear mode connectivity and the lottery ticket hypothesis in TensorFlow/Keras.

tensorflow-model-optimization (tfmot) only supports Keras 2, which TensorFlow
serves as `tf.keras` only when TF_USE_LEGACY_KERAS=1 is set before TensorFlow is
first imported. This is the one place that sets it; never `import keras`.
"""
import os
import sys

os.environ['TF_USE_LEGACY_KERAS'] = '1'
# TensorFlow's C++ INFO lines (oneDNN notices, cpu features) drown the progress log.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

if 'tensorflow' in sys.modules:
  _keras = getattr(sys.modules['tensorflow'], 'keras', None)
  if _keras is not None and 'tf_keras' not in getattr(_keras, '__name__', 'tf_keras'):
    raise ImportError(
        'tensorflow was imported before lmc_tf with Keras 3 as tf.keras: import '
        'lmc_tf first, or set TF_USE_LEGACY_KERAS=1 in the environment.')

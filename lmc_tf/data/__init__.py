"""Datasets: MNIST, Fashion-MNIST and CIFAR-10 in memory; ImageNet streamed through tfds."""
from lmc_tf.data.registry import DATASETS, Data, load

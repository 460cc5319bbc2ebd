"""Readers for datasets kept as files in a local directory (no tfds, no network)."""
import gzip
import os
import pickle

import numpy as np
import tensorflow as tf

from lmc_tf.errors import UserError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def read_idx(path):
  """Reads one IDX file (the MNIST format), gzipped or not, into a numpy array."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == b'\x1f\x8b':
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise UserError(f'{path} is not an IDX file: expected the MNIST file format')
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise UserError(f'{path} is truncated: header says {shape}, found {data.size} values')
  return data.reshape(shape)


def _find(directory, stem):
  for name in (stem, stem + '.gz'):
    path = os.path.join(directory, name)
    if tf.io.gfile.exists(path):
      return path
  raise UserError(f'{directory} has no {stem}[.gz]: point --data_dir at a directory with the '
                  'four MNIST-format IDX files')


def load_idx_directory(directory):
  """Returns {'train': (images NHWC uint8, labels), 'test': ...} from MNIST-format files."""
  splits = {}
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    images = read_idx(_find(directory, f'{prefix}-images-idx3-ubyte'))
    labels = read_idx(_find(directory, f'{prefix}-labels-idx1-ubyte'))
    if len(images) != len(labels):
      raise UserError(f'{directory}: {len(images)} {split} images but {len(labels)} labels')
    splits[split] = (images[..., None].astype(np.uint8), labels.astype(np.int32))
  return splits


def load_cifar10_directory(directory):
  """Reads the python pickles of CIFAR-10 (the `cifar-10-batches-py` folder)."""
  def read(name):
    path = os.path.join(directory, name)
    if not tf.io.gfile.exists(path):
      raise UserError(f'{directory} has no {name}: point --data_dir at the cifar-10-batches-py '
                      'folder, or leave --data_dir unset to use tensorflow-datasets')
    with tf.io.gfile.GFile(path, 'rb') as f:
      batch = pickle.load(f, encoding='bytes')
    images = np.asarray(batch[b'data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b'labels'], np.int32)

  train = [read(f'data_batch_{i}') for i in range(1, 6)]
  return {'train': (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
          'test': read('test_batch')}

import gzip
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from conftest import fashion_mnist
from lmc_tf import config as config_lib
from lmc_tf import data as data_lib
from lmc_tf.data import augment, local_files
from lmc_tf.errors import UserError


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_directory_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  images = {'train': rng.integers(0, 256, (12, 28, 28)), 't10k': rng.integers(0, 256, (5, 28, 28))}
  labels = {'train': rng.integers(0, 10, 12), 't10k': rng.integers(0, 10, 5)}
  for prefix in ('train', 't10k'):
    _write_idx(tmp_path / f'{prefix}-images-idx3-ubyte.gz', images[prefix])
    _write_idx(tmp_path / f'{prefix}-labels-idx1-ubyte.gz', labels[prefix])
  splits = local_files.load_idx_directory(str(tmp_path))
  np.testing.assert_array_equal(splits['train'][0][..., 0], images['train'])
  np.testing.assert_array_equal(splits['test'][1], labels['t10k'])
  assert splits['train'][0].shape == (12, 28, 28, 1)


def test_idx_rejects_other_files(tmp_path):
  path = tmp_path / 'train-images-idx3-ubyte'
  path.write_bytes(b'not an idx file at all')
  with pytest.raises(UserError, match='not an IDX file'):
    local_files.read_idx(str(path))


def test_cifar_pickle_directory(tmp_path):
  rng = np.random.default_rng(1)
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    batch = {b'data': rng.integers(0, 256, (4, 3072), dtype=np.uint8),
             b'labels': list(rng.integers(0, 10, 4))}
    with open(tmp_path / name, 'wb') as f:
      pickle.dump(batch, f)
  splits = local_files.load_cifar10_directory(str(tmp_path))
  assert splits['train'][0].shape == (20, 32, 32, 3)
  with open(tmp_path / 'test_batch', 'rb') as f:
    raw = pickle.load(f)
  # Channel-major rows become HWC images.
  np.testing.assert_array_equal(splits['test'][0][0, :, :, 1], raw[b'data'][0, 1024:2048].reshape(32, 32))


def _batches(data, seed, start, end, batch_size=50):
  return [(x.numpy(), y.numpy()) for x, y in data.train_batches(batch_size, seed, start, end)]


def test_data_order_is_a_pure_function_of_seed_and_iteration(fashion_mnist_splits):
  data = fashion_mnist(fashion_mnist_splits, train_subset=500)  # 10 iterations per epoch
  full = _batches(data, seed=3, start=0, end=25)
  resumed = _batches(data, seed=3, start=13, end=25)
  assert len(full) == 25 and len(resumed) == 12
  for (x1, y1), (x2, y2) in zip(full[13:], resumed):
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
  other = _batches(data, seed=4, start=0, end=25)
  assert not np.array_equal(full[0][1], other[0][1])
  # Each epoch visits every example once, in a new order.
  epoch0 = np.concatenate([y for _, y in full[:10]])
  np.testing.assert_array_equal(np.sort(epoch0), np.sort(data.train_labels))
  assert not np.array_equal(full[0][1], full[10][1])


def _synthetic_cifar(train_subset=None):
  return data_lib.load(config_lib.DatasetConfig(name='cifar10', synthetic=True,
                                                train_subset=train_subset))


def test_pixels_normalize_as_the_arithmetic_does(fashion_mnist_splits):
  """The lookup of _preprocess gives, bitwise, (v / 255 - mean) / std computed eagerly."""
  for data in (fashion_mnist(fashion_mnist_splits), _synthetic_cifar()):
    pixels = data.train_images[:40]
    expected = augment.normalize(tf.cast(pixels, tf.float32) / 255.0, data.info.mean,
                                 data.info.std)
    np.testing.assert_array_equal(data._preprocess(pixels).numpy(), expected.numpy())


@pytest.mark.parametrize('jit_compile', [False, True])
def test_a_loop_gathering_its_own_batches_sees_the_pipelines_batches(fashion_mnist_splits,
                                                                     jit_compile):
  """train_indices + make_batch in a compiled function (as Steps.gathered_train_loop makes
  them) give bitwise the batches of train_batches, across an epoch's end, augmented too."""
  for data, batch_size in ((fashion_mnist(fashion_mnist_splits, train_subset=500), 50),
                           (_synthetic_cifar(), 32)):
    expected = _batches(data, 7, 6, 13, batch_size)  # epochs of 10 and of 8 iterations
    indices = data.train_indices(batch_size, 7, 6, 13)
    make = tf.function(lambda index, iteration, data=data, batch_size=batch_size:
                       data.make_batch(index, iteration, 7, np.arange(batch_size), batch_size),
                       jit_compile=jit_compile)
    for row, (images, labels) in enumerate(expected):
      gathered = make(indices[row], tf.constant(6 + row, tf.int64))
      np.testing.assert_array_equal(gathered[0].numpy(), images)
      np.testing.assert_array_equal(gathered[1].numpy(), labels)


def test_cifar_augmentation_is_seeded_and_per_image():
  images = tf.random.stateless_uniform([64, 32, 32, 3], seed=[0, 0])
  a = augment.pad_crop_flip(images, tf.constant([1, 2], tf.int64))
  b = augment.pad_crop_flip(images, tf.constant([1, 2], tf.int64))
  c = augment.pad_crop_flip(images, tf.constant([1, 3], tf.int64))
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert not np.array_equal(a.numpy(), c.numpy())
  assert a.shape == (64, 32, 32, 3)
  # Each output is a shifted (maybe flipped) window of its own padded image.
  padded = np.pad(images.numpy(), [(0, 0), (4, 4), (4, 4), (0, 0)])
  shifts = set()
  for i in range(64):
    out = a.numpy()[i]
    found = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
             if np.array_equal(out, (padded[i, dy:dy + 32, dx:dx + 32][:, ::-1] if flip
                                     else padded[i, dy:dy + 32, dx:dx + 32]))]
    assert found, f'image {i} is not a crop of its padded input'
    shifts.add(found[0])
  assert len(shifts) > 10


def test_imagenet_preprocessing_shapes():
  jpeg = tf.io.encode_jpeg(tf.cast(tf.random.stateless_uniform([300, 400, 3], [0, 1]) * 255,
                                   tf.uint8))
  train = augment.imagenet_train(jpeg, tf.constant([0, 5], tf.int64), 224)
  again = augment.imagenet_train(jpeg, tf.constant([0, 5], tf.int64), 224)
  evaluated = augment.imagenet_eval(jpeg, 299)
  assert train.shape == (224, 224, 3) and evaluated.shape == (299, 299, 3)
  np.testing.assert_array_equal(train.numpy(), again.numpy())


def test_eval_batches_pad_with_zero_weights(fashion_mnist_splits):
  data = fashion_mnist(fashion_mnist_splits, test_eval_examples=2500)
  dataset, count = data.eval_batches('test', 1000)
  weights = np.concatenate([w.numpy() for _, _, w in dataset])
  assert count == 2500 and len(weights) == 3000
  assert weights.sum() == 2500 and not weights[2500:].any()


def test_unknown_dataset_and_missing_directory():
  with pytest.raises(UserError, match="unknown dataset 'cifar11'"):
    data_lib.load(config_lib.DatasetConfig(name='cifar11'))
  with pytest.raises(UserError, match='does not exist'):
    data_lib.load(config_lib.DatasetConfig(name='fashion_mnist'), data_dir='/nonexistent/fmnist')


def test_synthetic_imagenet_has_the_crop_shape():
  data = data_lib.load(config_lib.DatasetConfig(name='imagenet2012', image_size=299,
                                                synthetic=True))
  images, labels = next(iter(data.train_batches(8, 0, 0, 1)))
  assert images.shape == (8, 299, 299, 3) and labels.shape == (8,)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))

"""lmc_tf's input pipelines against OpenLTH's torchvision transforms, on data made here.

- CIFAR-10 read from a `cifar-10-batches-py` folder written in the real pickle format, then
  normalized: equal to torchvision's ToTensor + Normalize with OpenLTH's constants (written
  here from OpenLTH's datasets/cifar10.py, not read from lmc_tf).
- Pad-crop-flip: over many draws every one of the 9 x 9 crop offsets and both flips occur
  with their frequency (a chi-square test), independently of each other.
- ImageNet evaluation preprocessing of a synthetic JPEG against torchvision's
  Resize(256) + CenterCrop(224) (and 342/299 for Inception) on PIL, within one grey level.
"""
import importlib
import io
import pickle

import lmc_tf  # pylint: disable=unused-import  (must precede TensorFlow)

import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip('torch')

import torch_models  # pylint: disable=g-import-not-at-top,wrong-import-position

from lmc_tf import config  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmc_tf import data as data_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmc_tf.data import augment  # pylint: disable=g-import-not-at-top,wrong-import-position

# OpenLTH's datasets/cifar10.py: Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).
OPENLTH_CIFAR_MEAN = (0.485, 0.456, 0.406)
OPENLTH_CIFAR_STD = (0.229, 0.224, 0.225)
GREY_LEVEL = 1 / 255


def transforms():
  torch_models.torchvision_models()  # makes torchvision importable without its operators
  return importlib.import_module('torchvision.transforms')


def write_cifar_folder(directory, per_batch, seed):
  """A cifar-10-batches-py folder: 5 training batches and a test batch, pickled dicts of
  uint8 rows (1024 red, 1024 green, 1024 blue values, row-major) and labels."""
  rng = np.random.default_rng(seed)
  rows = {}
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    batch = {b'batch_label': name.encode(),
             b'data': rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b'labels': [int(v) for v in rng.integers(0, 10, per_batch)],
             b'filenames': [f'{name}_{i}.png'.encode() for i in range(per_batch)]}
    with open(directory / name, 'wb') as f:
      pickle.dump(batch, f, protocol=2)
    rows[name] = batch
  return rows


def test_cifar10_folder_normalized_as_openlth(tmp_path):
  rows = write_cifar_folder(tmp_path, per_batch=6, seed=0)
  data = data_lib.load(config.DatasetConfig(name='cifar10'), data_dir=str(tmp_path))
  assert (data.num_train, data.num_test) == (30, 6)
  dataset, count = data.eval_batches('test', 6)
  images, labels, _ = next(iter(dataset))
  assert count == 6
  T = transforms()  # pylint: disable=invalid-name
  reference = T.Compose([T.ToTensor(), T.Normalize(OPENLTH_CIFAR_MEAN, OPENLTH_CIFAR_STD)])
  test = rows['test_batch']
  for i in range(6):
    # The pickle's row as the HWC uint8 image torchvision's CIFAR10 dataset makes of it.
    image = test[b'data'][i].reshape(3, 32, 32).transpose(1, 2, 0)
    expected = reference(image).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(images[i].numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(labels.numpy(), test[b'labels'])


def test_pad_crop_flip_draws_every_offset_and_flip_uniformly():
  """Each image is a 32x32 window of its 4-pixel zero-padded self, at an offset (dy, dx)
  in 0..8 x 0..8, flipped with probability 1/2: 162 outcomes, each 1/162. An image whose
  pixels are all distinct identifies its outcome exactly."""
  pad, size, draws = 4, 8, 16200
  base = np.arange(1, size * size + 1, dtype=np.float32).reshape(1, size, size, 1)
  images = tf.constant(np.repeat(base, 1620, axis=0))
  padded = np.pad(base[0, :, :, 0], pad)
  outcomes = {}
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      window = padded[dy:dy + size, dx:dx + size]
      outcomes[window.tobytes()] = (dy, dx, 0)
      outcomes[window[:, ::-1].copy().tobytes()] = (dy, dx, 1)
  assert len(outcomes) == 162  # all distinguishable
  counts = {}
  for batch in range(draws // 1620):
    out = augment.pad_crop_flip(images, tf.constant([7, batch], tf.int64)).numpy()[..., 0]
    for image in out:
      key = outcomes[image.tobytes()]  # KeyError: not a (flipped) window of the padded image
      counts[key] = counts.get(key, 0) + 1
  assert len(counts) == 162, 'some offset or flip never occurs'
  observed = np.array([counts[k] for k in sorted(counts)], np.float64)
  expected = draws / 162
  chi2 = float(((observed - expected) ** 2 / expected).sum())
  # 161 degrees of freedom: mean 161, standard deviation 17.9; 250 is p < 1e-5.
  assert chi2 < 250, chi2
  # Flip independent of the offset: each offset's flip share near 1/2.
  flips = np.array([[counts[(dy, dx, f)] for f in (0, 1)] for dy in range(9) for dx in range(9)])
  assert abs(flips[:, 1].sum() / draws - 0.5) < 0.02


def synthetic_jpeg(height, width, seed):
  """A JPEG of a smooth pattern plus noise: edges and texture for the resize to get wrong."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  pattern = 127 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0)
  image = pattern[..., None] + rng.normal(0, 20, (height, width, 3))
  return tf.io.encode_jpeg(image.clip(0, 255).astype(np.uint8), quality=95).numpy()


@pytest.mark.parametrize('height,width,size,resize', [
    (300, 400, 224, 256), (375, 500, 224, 256), (333, 257, 224, 256), (500, 333, 224, 256),
    (400, 420, 299, 342)])
def test_imagenet_eval_preprocessing_matches_torchvision(height, width, size, resize):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  jpeg = synthetic_jpeg(height, width, seed=height)
  ours = augment.imagenet_eval(tf.constant(jpeg), size).numpy()
  T = transforms()  # pylint: disable=invalid-name
  reference = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(),
                         T.Normalize(augment.IMAGENET_MEAN, augment.IMAGENET_STD)])
  theirs = reference(Image.open(io.BytesIO(jpeg)).convert('RGB')).numpy().transpose(1, 2, 0)
  assert ours.shape == theirs.shape == (size, size, 3)
  # In [0, 1] units, undoing the normalization: PIL rounds its resized image to whole grey
  # levels, TensorFlow keeps it in floats, so one level is the closest they can agree.
  grey = np.abs(ours - theirs) * np.array(augment.IMAGENET_STD)
  assert grey.max() <= GREY_LEVEL * 1.001, grey.max() / GREY_LEVEL
  assert grey.mean() <= 0.4 * GREY_LEVEL, grey.mean() / GREY_LEVEL

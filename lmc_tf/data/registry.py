"""The dataset registry and the input pipelines.

The order of training batches is a pure function of (data-order seed,
iteration): epoch e visits a stateless permutation seeded by (seed, e), and
augmentation at iteration i is seeded by (seed, i). A pipeline started at
iteration i yields exactly the batches an uninterrupted run sees from i on.
"""
import copy
import dataclasses
import functools
import math
import os
import threading
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from lmc_tf.data import augment
from lmc_tf.data import local_files
from lmc_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
# Salts that keep the shuffling and augmentation streams of one seed apart.
_SHUFFLE, _AUGMENT = 0, 1


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train: int
  num_test: int
  image_shape: Optional[Tuple[int, int, int]]  # None: set by DatasetConfig.image_size
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  tfds_name: str
  local_format: Optional[str] = None  # 'idx' or 'cifar_pickle'
  default_local_dir: Optional[str] = None
  augmentation: str = 'none'  # 'none', 'pad_crop_flip' or 'imagenet'
  test_split: str = 'test'


DATASETS = {
    'mnist': DatasetInfo(10, 60000, 10000, (28, 28, 1), (0.1307,), (0.3081,), 'mnist', 'idx'),
    'fashion_mnist': DatasetInfo(10, 60000, 10000, (28, 28, 1), (0.2860,), (0.3530,),
                                 'fashion_mnist', 'idx', '/usr/share/datasets/fashion-mnist'),
    # OpenLTH normalizes CIFAR-10 with ImageNet's statistics (its datasets/cifar10.py).
    'cifar10': DatasetInfo(10, 50000, 10000, (32, 32, 3), augment.IMAGENET_MEAN,
                           augment.IMAGENET_STD, 'cifar10', 'cifar_pickle',
                           augmentation='pad_crop_flip'),
    'imagenet2012': DatasetInfo(1000, 1281167, 50000, None, augment.IMAGENET_MEAN,
                                augment.IMAGENET_STD, 'imagenet2012', augmentation='imagenet',
                                test_split='validation'),
}

_SYNTHETIC_TRAIN, _SYNTHETIC_TEST = 256, 64


def _image_shape(info, config):
  size = config.image_size or 224
  return info.image_shape or (size, size, 3)


def _seed_key(seed, salt):
  return tf.constant([seed, salt], tf.int64)


def _subset_count(requested, available):
  return available if requested is None else min(int(requested), available)


def _replica_slice(batch_size, replicas, num_replicas):
  """(per-replica batch size, positions in the batch of `replicas`' slices, in order)."""
  if batch_size % num_replicas:
    raise UserError(f'batch size {batch_size} does not split evenly over {num_replicas} '
                    'replicas: choose a multiple of the replica count')
  size = batch_size // num_replicas
  return size, np.concatenate([np.arange(r * size, (r + 1) * size) for r in replicas])


def _keeps_position(positions, batch_size):
  """A tf.data filter on (index in the stream, ...) keeping the batch `positions`."""
  keep = tf.constant(np.isin(np.arange(batch_size), positions))
  return lambda index, *_: tf.gather(keep, index % batch_size)


# ImageNet's training read. Two data-order seeds put each shard (chunk) at independent
# random places in the epoch, so the rank correlation of example positions between seeds is
# about that of two random permutations of the chunks: mean 0, standard deviation
# 1 / sqrt(chunks), 0.031 for ImageNet's 1024 shards. Cutting shards into more chunks lowers
# it (4 each: 0.016), but reading chunk j skips j chunks' records, so with k chunks a shard's
# bytes are read (k + 1) / 2 times.
IMAGENET_CHUNKS_PER_SHARD = 1
IMAGENET_CYCLE_LENGTH = 16  # chunks read at once, one record from each in turn
IMAGENET_SHUFFLE_WINDOW = 16384  # consecutive records permuted together (was the shuffle buffer)
_READ_BUFFER_BYTES = 8 << 20  # per open file, as tensorflow-datasets reads


def split_shards(shards, chunks):
  """(paths, skips, takes) of `shards` with each shard cut into `chunks` runs of its records."""
  paths, skips, takes = (np.asarray(s) for s in shards)
  cuts = skips[:, None] + takes[:, None] * np.arange(chunks + 1) // chunks
  return np.repeat(paths, chunks), cuts[:, :-1].ravel(), np.diff(cuts, axis=1).ravel()


def _read_shard(path, skip, take):
  return tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES).skip(skip).take(take)


def shuffled_epoch(shards, seed, epoch, cycle_length=IMAGENET_CYCLE_LENGTH,
                   window=IMAGENET_SHUFFLE_WINDOW):
  """The serialized records of `shards` in the order of `epoch` under data-order `seed`.

  `shards` is (paths, skips, takes): each shard's TFRecord file and the run of its records
  to read. The shards are visited in a permutation drawn from (seed, epoch), `cycle_length`
  at a time taking one record from each in turn, and each `window` consecutive records
  are permuted again. Only stateless ops draw the order: tf.data's shuffle would also
  depend on TensorFlow's global seed, which building a model sets.
  """
  epoch = tf.cast(epoch, tf.int64)  # fold_in draws by dtype: a Python 0 is not range()'s 0
  key = tf.random.experimental.stateless_fold_in(_seed_key(seed, _SHUFFLE), epoch)
  order = tf.random.experimental.stateless_shuffle(tf.range(len(shards[0])), seed=key)
  records = (tf.data.Dataset.from_tensor_slices(tuple(tf.gather(s, order) for s in shards))
             .interleave(_read_shard, cycle_length=cycle_length, num_parallel_calls=AUTOTUNE,
                         deterministic=True))

  def permute(index, window_records):
    window_key = tf.random.experimental.stateless_fold_in(key, index)
    return tf.random.experimental.stateless_shuffle(window_records, seed=window_key)

  # Whole windows are permuted, so the next one is read ahead while this one is consumed.
  return records.batch(window).enumerate().map(permute).prefetch(1).unbatch()


def train_stream(shards, seed, start, end, epoch_size, cycle_length=IMAGENET_CYCLE_LENGTH,
                 window=IMAGENET_SHUFFLE_WINDOW):
  """(index, record) for the records start..end-1 of the training stream under `seed`.

  Epoch e holds indices e * epoch_size .. (e + 1) * epoch_size - 1: the first `epoch_size`
  records of `shuffled_epoch(shards, seed, e)`. A stream begun at `start` yields exactly
  what an uninterrupted one has from `start` on.
  """
  first_epoch = start // epoch_size
  records = tf.data.Dataset.range(first_epoch, math.ceil(end / epoch_size)).flat_map(
      lambda epoch: shuffled_epoch(shards, seed, epoch, cycle_length, window).take(epoch_size))
  return (tf.data.Dataset.zip((tf.data.Dataset.range(first_epoch * epoch_size, end), records))
          .skip(start - first_epoch * epoch_size))


class Data:
  """A dataset with its train pipeline and padded evaluation pipelines."""

  # Whether a train loop may gather its batches itself (train_indices, make_batch).
  held_in_memory = False

  def __init__(self, name, info, config):
    self.name = name
    self.info = info
    self.config = config
    self.image_shape = _image_shape(info, config)

  @property
  def num_classes(self):
    return self.info.num_classes

  @property
  def num_train(self):
    raise NotImplementedError

  @property
  def num_test(self):
    return self.info.num_test

  def iterations_per_epoch(self, batch_size):
    steps = self.num_train // batch_size
    if steps < 1:
      raise UserError(f'batch size {batch_size} is larger than the {self.num_train} training '
                      'examples: lower TrainingConfig.batch_size')
    return steps

  def train_batches(self, batch_size, seed, start, end, replicas=(0,), num_replicas=1):
    """Batches of (images, labels) for iterations start..end-1 under data-order `seed`.

    Under a strategy with `num_replicas` replicas each iteration's batch is cut into
    that many equal slices, and one input pipeline yields, iteration by iteration,
    the slices of its own `replicas` (global replica indices) in order. The examples
    and their augmentation depend only on (seed, iteration, position in the batch),
    so every split of a batch trains on the same data.
    """
    raise NotImplementedError

  def eval_count(self, split):
    """How many examples of `split` ('train' or 'test') evaluation uses."""
    if split == 'train':
      return _subset_count(self.config.train_eval_examples, self.num_train)
    return _subset_count(self.config.test_eval_examples, self.num_test)

  def with_eval_examples(self, split, count):
    """This dataset, evaluating `split` on its first `count` examples (at most those of
    the DatasetConfig); training is unchanged."""
    key = 'train_eval_examples' if split == 'train' else 'test_eval_examples'
    view = copy.copy(self)
    view.config = dataclasses.replace(self.config, **{key: min(count, self.eval_count(split))})
    return view

  def eval_batches(self, split, batch_size, replicas=(0,), num_replicas=1):
    """(dataset of (images, labels, weights), example count): padded to whole batches,
    pads weigh 0; batches are sliced over replicas as in train_batches."""
    raise NotImplementedError


class InMemoryData(Data):
  """Small datasets held as uint8 arrays; batches are gathered by index, then preprocessed."""

  held_in_memory = True

  def __init__(self, name, info, config, splits):
    super().__init__(name, info, config)
    train_images, train_labels = splits['train']
    keep = _subset_count(config.train_subset, len(train_images))
    self.train_images, self.train_labels = train_images[:keep], train_labels[:keep]
    self.test_images, self.test_labels = splits['test']
    self._eval_cache = {}
    # Evaluations in several threads (an analysis') may ask for the same batches at once;
    # views (with_eval_examples) share the cache and this lock.
    self._eval_lock = threading.Lock()

  @property
  def num_train(self):
    return len(self.train_images)

  @property
  def num_test(self):
    return len(self.test_images)

  @functools.cached_property
  def _pixel_values(self):
    """normalize(v / 255) of every uint8 value v in every channel c, at [256 c + v]."""
    with tf.init_scope():
      values = tf.range(256, dtype=tf.float32)[:, None] / 255.0
      return tf.reshape(tf.transpose(augment.normalize(values, self.info.mean, self.info.std)),
                        [-1])

  def _preprocess(self, images, seed=None, positions=None, batch_size=None):
    # Augmentation moves uint8 pixels (padding is 0, black); each pixel is then looked up in
    # _pixel_values. A lookup is exact, so a batch is bitwise the same whether tf.data, a
    # graph (whose arithmetic optimizer may rewrite (x / 255 - mean) / std) or XLA makes it.
    if seed is not None and self.info.augmentation == 'pad_crop_flip':
      images = augment.pad_crop_flip(images, seed, positions, batch_size)
    elif seed is not None and self.info.augmentation == 'imagenet':
      images = augment.random_flip(images, seed, positions, batch_size)
    channels = images.shape[-1]
    return tf.gather(self._pixel_values, tf.cast(images, tf.int32) + 256 * tf.range(channels))

  def _epoch_order(self, batch_size, seed, epoch):
    """The examples of each iteration of `epoch`, [iterations per epoch, batch_size]."""
    steps = self.iterations_per_epoch(batch_size)
    order = tf.random.experimental.stateless_shuffle(
        tf.range(self.num_train),
        seed=tf.random.experimental.stateless_fold_in(_seed_key(seed, _SHUFFLE),
                                                      tf.cast(epoch, tf.int64)))
    return tf.reshape(order[:steps * batch_size], [steps, batch_size])

  @functools.cached_property
  def _train_tensors(self):
    with tf.init_scope():  # eager, also when first asked for by a pipeline being traced
      return tf.constant(self.train_images), tf.constant(self.train_labels)

  def make_batch(self, index, iteration, seed, positions, batch_size):
    """(images, labels) of the examples `index` (the `positions` of iteration `iteration`'s
    batch of `batch_size`): gathered, then augmented with the seed of (seed, iteration)."""
    images, labels = self._train_tensors
    index = tf.gather(index, positions)
    # fold_in's draw depends on the dtype of what it folds in: always int64, as tf.data's.
    seed_i = tf.random.experimental.stateless_fold_in(
        _seed_key(seed, _AUGMENT), tf.cast(iteration, tf.int64), alg=augment.ALGORITHM)
    return (self._preprocess(tf.gather(images, index), seed_i, positions, batch_size),
            tf.gather(labels, index))

  def train_indices(self, batch_size, seed, start, end):
    """The examples of iterations start..end-1, [end - start, batch_size]: what train_batches
    gathers, for a loop that gathers its batches itself (make_batch)."""
    steps = self.iterations_per_epoch(batch_size)
    first_epoch = start // steps
    orders = [self._epoch_order(batch_size, seed, epoch)
              for epoch in range(first_epoch, math.ceil(end / steps))]
    return tf.concat(orders, 0)[start - first_epoch * steps:end - first_epoch * steps]

  def train_batches(self, batch_size, seed, start, end, replicas=(0,), num_replicas=1):
    steps = self.iterations_per_epoch(batch_size)
    size, positions = _replica_slice(batch_size, replicas, num_replicas)
    first_epoch = start // steps
    indices = (tf.data.Dataset.range(first_epoch, math.ceil(end / steps))
               .flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(
                   self._epoch_order(batch_size, seed, epoch)))
               .skip(start - first_epoch * steps))
    iterations = tf.data.Dataset.range(start, end)

    def make_batch(iteration, index):
      # The slices of this pipeline's replicas, preprocessed together, then one per element.
      batch = self.make_batch(index, iteration, seed, positions, batch_size)
      return tuple(tf.reshape(t, [len(replicas), size] + t.shape[1:].as_list()) for t in batch)

    return (tf.data.Dataset.zip((iterations, indices))
            .map(make_batch, num_parallel_calls=AUTOTUNE).unbatch().prefetch(AUTOTUNE))

  def eval_batches(self, split, batch_size, replicas=(0,), num_replicas=1):
    # Shared with views of other evaluation sizes (with_eval_examples), so keyed by size too;
    # made once, also where threads (an analysis' evaluations) ask for them at the same time.
    key = (split, self.eval_count(split), batch_size, tuple(replicas), num_replicas)
    with self._eval_lock:
      if key not in self._eval_cache:
        self._eval_cache[key] = self._padded_eval_batches(split, batch_size, replicas,
                                                          num_replicas)
      return self._eval_cache[key]

  def _padded_eval_batches(self, split, batch_size, replicas, num_replicas):
    size, positions = _replica_slice(batch_size, replicas, num_replicas)
    images, labels = ((self.train_images, self.train_labels) if split == 'train' else
                      (self.test_images, self.test_labels))
    count = self.eval_count(split)
    padded = math.ceil(count / batch_size) * batch_size
    pad = [(0, padded - count)]
    mine = np.isin(np.arange(padded) % batch_size, positions)  # this pipeline's examples
    # Batches of one replica's share, as many per global batch as this pipeline has
    # replicas; all whole: a static batch shape.
    in_batches = lambda a: a.reshape((-1, size) + a.shape[1:])
    images = in_batches(np.pad(images[:count], pad + [(0, 0)] * 3)[mine])
    labels = in_batches(np.pad(labels[:count], pad)[mine])
    weights = in_batches(np.pad(np.ones(count, np.float32), pad)[mine])
    # Preprocessed once and held as float32 batches: a pipeline that sliced and
    # preprocessed them at each pass cost LeNet's per-epoch evaluation about as much as
    # its forward pass. Eager, also when first asked for by a function being traced.
    with tf.init_scope():
      images = self._preprocess(tf.constant(images))
    return tf.data.Dataset.from_tensor_slices((images, labels, weights)).prefetch(AUTOTUNE), count


class ImageNetData(Data):
  """ImageNet streamed from tensorflow-datasets' TFRecords, with JPEG decoding in the pipeline.

  Training reads the shards in an order of (seed, epoch) (`shuffled_epoch`); evaluation
  reads them in tensorflow-datasets' fixed order.
  """

  def __init__(self, name, info, config, builder):
    super().__init__(name, info, config)
    self.builder = builder

  @property
  def num_train(self):
    return _subset_count(self.config.train_subset, self.info.num_train)

  def _split(self, split):
    from tensorflow_datasets import decode  # pylint: disable=g-import-not-at-top
    return self.builder.as_dataset(split=split, shuffle_files=False, as_supervised=True,
                                   decoders={'image': decode.SkipDecoding()})

  def _train_shards(self):
    """(paths, skips, takes) of the chunks of the shards holding the first num_train
    training examples."""
    file_format = self.builder.info.file_format
    if file_format is not None and file_format.value != 'tfrecord':
      raise UserError(f'{self.info.tfds_name} is prepared as {file_format.value} files: '
                      'training reads TFRecords, so prepare it with file_format=tfrecord')
    instructions = self.builder.info.splits[f'train[:{self.num_train}]'].file_instructions
    return split_shards((np.array([os.fspath(i.filename) for i in instructions]),
                         np.array([i.skip for i in instructions], np.int64),
                         np.array([i.take for i in instructions], np.int64)),
                        IMAGENET_CHUNKS_PER_SHARD)

  def train_batches(self, batch_size, seed, start, end, replicas=(0,), num_replicas=1):
    from tensorflow_datasets import decode  # pylint: disable=g-import-not-at-top
    steps = self.iterations_per_epoch(batch_size)
    replica_batch, positions = _replica_slice(batch_size, replicas, num_replicas)
    size = self.image_shape[0]
    features = self.builder.info.features
    augment_key = _seed_key(seed, _AUGMENT)
    # Each epoch keeps steps * batch_size examples of its own order (train_subset's examples
    # are the same every epoch: the shards are cut to them before shuffling).
    records = train_stream(self._train_shards(), seed, start * batch_size, end * batch_size,
                           steps * batch_size)
    # Skipping and keeping this pipeline's share before decoding keep a resume and each
    # worker's input cheap.
    records = records.filter(_keeps_position(positions, batch_size))

    def preprocess(index, record):
      example = features.deserialize_example(record, decoders={'image': decode.SkipDecoding()})
      seed_i = tf.random.experimental.stateless_fold_in(augment_key, index)
      return (augment.imagenet_train(example['image'], seed_i, size),
              tf.cast(example['label'], tf.int32))

    return (records.map(preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(replica_batch, drop_remainder=True).prefetch(AUTOTUNE))

  def eval_batches(self, split, batch_size, replicas=(0,), num_replicas=1):
    replica_batch, positions = _replica_slice(batch_size, replicas, num_replicas)
    count = self.eval_count(split)
    split = 'train' if split == 'train' else self.info.test_split
    size = self.image_shape[0]
    padded = math.ceil(count / batch_size) * batch_size
    examples = self._split(split).take(count).map(lambda jpeg, label: (jpeg, label, 1.0))
    pads = tf.data.Dataset.from_tensors((tf.constant(b''), tf.constant(0, tf.int64), 0.0))

    def decode(_, example):
      jpeg, label, weight = example
      image = tf.cond(weight > 0, lambda: augment.imagenet_eval(jpeg, size),
                      lambda: tf.zeros([size, size, 3]))
      return image, tf.cast(label, tf.int32), weight

    stream = examples.concatenate(pads.repeat(padded - count))
    return (tf.data.Dataset.zip((tf.data.Dataset.range(padded), stream))
            .filter(_keeps_position(positions, batch_size))
            .map(decode, num_parallel_calls=AUTOTUNE).batch(replica_batch, drop_remainder=True)
            .prefetch(AUTOTUNE)), count


def _synthetic_splits(shape, num_classes, train_count):
  rng = np.random.default_rng(0)
  def split(count):
    return (rng.integers(0, 256, (count,) + tuple(shape), dtype=np.uint8),
            rng.integers(0, num_classes, count).astype(np.int32))
  return {'train': split(train_count or _SYNTHETIC_TRAIN), 'test': split(_SYNTHETIC_TEST)}


def _tfds_in_memory(info, tfds_data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    loaded = tfds.load(info.tfds_name, data_dir=tfds_data_dir, batch_size=-1, as_supervised=True)
  except Exception as e:  # tfds raises many types for a missing or undownloadable dataset
    raise UserError(f'could not load {info.tfds_name} through tensorflow-datasets '
                    f'({type(e).__name__}: {str(e).splitlines()[0][:200]}): prepare it in '
                    '--tfds_data_dir, or pass --data_dir with local files') from e
  return {split: (np.asarray(loaded[split][0], np.uint8), np.asarray(loaded[split][1], np.int32))
          for split in ('train', 'test')}


def load(config, data_dir=None, tfds_data_dir=None):
  """Returns the `Data` for a DatasetConfig.

  Small datasets come from `data_dir` (or the dataset's default local
  directory) when given or present, else from tensorflow-datasets.
  """
  if config.name not in DATASETS:
    raise UserError(f'unknown dataset {config.name!r}: choose one of {sorted(DATASETS)}')
  info = DATASETS[config.name]
  if config.synthetic:
    splits = _synthetic_splits(_image_shape(info, config), info.num_classes, config.train_subset)
    return InMemoryData(config.name, info, config, splits)
  if info.local_format is None:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(info.tfds_name, data_dir=tfds_data_dir)
    if not tf.io.gfile.exists(os.path.join(builder.data_dir, 'dataset_info.json')):
      raise UserError(f'{info.tfds_name} is not prepared in {builder.data_dir}: prepare it with '
                      'tensorflow-datasets (ImageNet needs its manual download) and pass '
                      '--tfds_data_dir')
    return ImageNetData(config.name, info, config, builder)
  directory = data_dir or info.default_local_dir
  if data_dir and not tf.io.gfile.isdir(data_dir):
    raise UserError(f'data directory {data_dir} does not exist: fix --data_dir, or leave it '
                    'unset to use tensorflow-datasets')
  if directory and tf.io.gfile.isdir(directory):
    if info.local_format == 'idx':
      splits = local_files.load_idx_directory(directory)
    else:
      splits = local_files.load_cifar10_directory(directory)
  elif directory and tfds_data_dir is None:
    raise UserError(f'data directory {directory} for {config.name} does not exist: run '
                    '`apt-get install -y dataset-fashion-mnist`, pass --data_dir, or pass '
                    '--tfds_data_dir to use tensorflow-datasets')
  else:
    splits = _tfds_in_memory(info, tfds_data_dir)
  return InMemoryData(config.name, info, config, splits)

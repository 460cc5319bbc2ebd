"""Image preprocessing as pure functions of an explicit stateless seed.

Everything random in the input pipeline takes a seed derived from (data-order
seed, iteration or example index), so a resumed run sees the same augmented
batches as an uninterrupted one.
"""
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images, mean, std):
  return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


# The random draws of in-memory batches name their algorithm and draw integers, so that they
# are the same whether XLA compiles them (Steps.gathered_train_loop) or not: XLA makes other
# floats than TensorFlow's kernels, and with the default algorithm other numbers from seeds
# that do not fit in 32 bits, as folded-in seeds do not.
ALGORITHM = 'philox'


def uniform_ints(shape, seed, maxval):
  """Integers in [0, maxval)."""
  return tf.random.stateless_uniform(shape, seed, minval=0, maxval=maxval, dtype=tf.int32,
                                     alg=ALGORITHM)


def random_flip(images, seed, positions, batch_size):
  """Flips each image of `positions` of a batch left-right with probability 1/2."""
  flip = tf.gather(uniform_ints([batch_size], seed, 2), positions) > 0
  return tf.where(tf.reshape(flip, [-1, 1, 1, 1]), tf.reverse(images, axis=[2]), images)


def pad_crop_flip(images, seed, positions=None, batch_size=None, pad=4):
  """CIFAR augmentation of a batch: each image gets its own crop offset and flip.

  `images` are pixels (uint8, or floats in [0, 1]); padding is 0, black, as in the usual
  pad-then-crop.
  `images` may be some `positions` of a batch of `batch_size` (one replica's share):
  the random draws are made for the whole batch, so an image is augmented the
  same however the batch is split over replicas.
  """
  if positions is None:
    positions = tf.range(tf.shape(images)[0])
    batch_size = tf.shape(images)[0]
  height, width = images.shape[1], images.shape[2]
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2,
                                                                          alg=ALGORITHM))
  offsets = tf.gather(uniform_ints([batch_size, 2], crop_seed, 2 * pad + 1), positions)
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  rows = offsets[:, :1] + tf.range(height)[None]
  cols = offsets[:, 1:] + tf.range(width)[None]
  cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
  cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
  return random_flip(cropped, flip_seed, positions, batch_size)


def _decode(jpeg_bytes, window=None):
  # libjpeg's accurate integer IDCT, as PIL (torchvision's decoder) uses; TensorFlow's
  # default, the fast one, is up to 5 grey levels off after resizing.
  if window is None:
    return tf.image.decode_jpeg(jpeg_bytes, channels=3, dct_method='INTEGER_ACCURATE')
  return tf.image.decode_and_crop_jpeg(jpeg_bytes, window, channels=3,
                                       dct_method='INTEGER_ACCURATE')


def _resize(image, size):
  # Antialiased bilinear, as PIL's resize that torchvision's Resize calls: without the
  # antialiasing a downscale skips pixels (up to 30 grey levels off on a noisy image).
  return tf.image.resize(image, size, method='bilinear', antialias=True)


def imagenet_train(jpeg_bytes, seed, size):
  """OpenLTH's RandomResizedCrop(size, scale=(0.1, 1), ratio=(0.8, 1.25)), then a flip."""
  box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = tf.image.extract_jpeg_shape(jpeg_bytes)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=box_seed,
      min_object_covered=0.1, aspect_ratio_range=(0.8, 1.25), area_range=(0.1, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  image = _resize(_decode(jpeg_bytes, window), [size, size]) / 255.0
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def imagenet_eval(jpeg_bytes, size):
  """torchvision's Resize(round(size / 0.875)) (the shorter side; the longer one truncated, as
  torchvision computes it), CenterCrop(size) (offsets rounded half to even, as Python's
  round), ToTensor, Normalize: tests/reference/test_preprocessing.py compares them."""
  image = _decode(jpeg_bytes)
  shape = tf.shape(image)[:2]
  # In integers, so that the shorter side is exactly the target (342 for Inception's 299).
  resized = round(size / 0.875) * shape // tf.reduce_min(shape)
  image = _resize(image, resized)
  top, left = tf.unstack(tf.cast(tf.round(tf.cast(resized - size, tf.float32) / 2), tf.int32))
  image = image[top:top + size, left:left + size]
  image = tf.ensure_shape(image, [size, size, 3]) / 255.0
  return normalize(image, IMAGENET_MEAN, IMAGENET_STD)

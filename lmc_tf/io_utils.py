"""Atomic writes through tf.io.gfile, so results are never half-written (also on gs://).

In a multi-worker job only the chief writes (lmc_tf/workers.py); on the other
workers writes are skipped and summary writers write nothing.
"""
import io
import json

import numpy as np
import tensorflow as tf

from lmc_tf import workers


def summary_writer(logdir):
  """A TensorBoard writer for `logdir`; one that writes nothing off the chief."""
  return (tf.summary.create_file_writer(logdir) if workers.is_chief() else
          tf.summary.create_noop_writer())


def _write_atomically(path, data, mode):
  if not workers.is_chief():
    return
  tmp = f'{path}.tmp'
  with tf.io.gfile.GFile(tmp, mode) as f:
    f.write(data)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def write_json(path, obj):
  _write_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + '\n', 'w')


def read_json(path):
  with tf.io.gfile.GFile(path, 'r') as f:
    return json.load(f)


def write_text(path, text):
  _write_atomically(path, text, 'w')


def write_npz(path, arrays):
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  _write_atomically(path, buffer.getvalue(), 'wb')


def read_npz(path):
  with tf.io.gfile.GFile(path, 'rb') as f:
    with np.load(io.BytesIO(f.read())) as data:
      return {key: data[key] for key in data.files}

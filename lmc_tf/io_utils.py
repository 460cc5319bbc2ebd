"""Atomic writes through tf.io.gfile, so results are never half-written (also on gs://).

In a multi-worker job only the chief writes (lmc_tf/workers.py); on the other
workers writes are skipped and summary writers write nothing.

A result file that cannot be read (cut short by a full disk, overwritten by
something else) or written (a read-only directory, a full disk) ends the
binary with one line naming the file and what to do, not a traceback.
"""
import hashlib
import io
import json
import os
import secrets
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from lmc_tf import errors
from lmc_tf import workers
from lmc_tf.errors import UserError



def summary_writer(logdir):
  """A TensorBoard writer for `logdir`; one that writes nothing off the chief."""
  return (tf.summary.create_file_writer(logdir) if workers.is_chief() else
          tf.summary.create_noop_writer())


def _one_line(error, limit=200):
  return ' '.join(str(error).split())[:limit]


def _write_refused(error):
  refused = errors.NOT_PERMITTED_ERRNOS + errors.DISK_FULL_ERRNOS
  return ((isinstance(error, OSError) and error.errno in refused) or
          isinstance(error, (tf.errors.PermissionDeniedError, tf.errors.ResourceExhaustedError)))


def _write_atomically(path, data, mode):
  """Writes `data` to a temporary file beside `path`, then renames it over `path`.

  Readers see the old file or the new one, never a mix. Each writer has a
  temporary name of its own: two processes that finish the same run at once
  (two sweeps sharing a dense run) would otherwise write into, or rename away,
  each other's file.
  """
  if not workers.is_chief():
    return
  path = os.fspath(path)
  tmp = f'{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}'
  try:
    if '://' in path:  # an object store: gfile's rename is its atomic replace
      with tf.io.gfile.GFile(tmp, mode) as f:
        f.write(data)
      tf.io.gfile.rename(tmp, path, overwrite=True)
    else:  # gfile has no fsync: without one a crash can leave the new name on empty blocks
      with open(tmp, mode, encoding=None if 'b' in mode else 'utf-8') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
  except BaseException as e:  # Ctrl-C included: no temporary file is left behind
    _remove_quietly(tmp)
    if _write_refused(e):
      reason = e.strerror if isinstance(e, OSError) and e.strerror else _one_line(e)
      raise UserError(f'cannot write {path} ({reason}): check the directory\'s '
                      'permissions and free disk space, then run the same command again to '
                      'resume') from e
    raise


def _remove_quietly(path):
  try:
    tf.io.gfile.remove(path)
  except (tf.errors.OpError, OSError):
    pass  # never written, or the directory refuses that too


# GFile.read() with no size reads as many bytes as the file at `path` has now: when a
# writer replaces it meanwhile, that is the new file's size applied to the old file's
# bytes. Reading chunks until the end reads the one file that was opened.
_CHUNK = 1 << 20


def read_decoded(path, decode, sha256=None, fix=None):
  """decode(bytes of `path`); a missing or unreadable file, or one whose digest is not
  `sha256` (when given), is a UserError naming it and `fix`."""
  path = os.fspath(path)
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = b''.join(iter(lambda: f.read(_CHUNK), b''))
  except tf.errors.NotFoundError as e:
    raise UserError(f'{path} does not exist: check the path, or run the command that writes '
                    'it first') from e
  if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
    raise UserError(f'{path} is corrupt (its sha256 is not the one recorded when it was '
                    f'written): {fix}')
  try:
    return decode(data)
  except (ValueError, EOFError, KeyError, OSError, zipfile.BadZipFile, zlib.error) as e:
    # What json (UnicodeDecodeError and JSONDecodeError are ValueErrors), zipfile, zlib and
    # numpy raise for a damaged file; anything else (MemoryError) is not the file's fault.
    raise UserError(f'{path} is unreadable ({type(e).__name__}: {_one_line(e, 100)}): delete '
                    'it (or its run directory) and run the same command again to redo that '
                    'run') from e


def write_json(path, obj):
  _write_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + '\n', 'w')


def read_json(path):
  return read_decoded(path, lambda data: json.loads(data.decode('utf-8')))


def write_text(path, text):
  _write_atomically(path, text, 'w')


def write_bytes(path, data):
  _write_atomically(path, data, 'wb')


def write_npz(path, arrays):
  """Writes `arrays` (name -> array); returns the file's size and sha256, to check it by."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  data = buffer.getvalue()
  write_bytes(path, data)
  return {'bytes': len(data), 'sha256': hashlib.sha256(data).hexdigest()}


def _decode_npz(data):
  with np.load(io.BytesIO(data)) as archive:
    return {key: archive[key] for key in archive.files}  # reads (and checks) every array


def read_npz(path, sha256=None, fix=None):
  return read_decoded(path, _decode_npz, sha256, fix)

"""Run directories: their files, layouts, identity, claiming, locking and finished check.

Nothing else builds a path inside a run directory: binaries and modules ask a
RunDir for its files, its IMP levels and its copies.

A run directory holds:
  hparams.json          what determines the result (config and lineage); claimed once
                        every input is checked, and a different one is refused
  operative_config.gin  the gin configuration as run
  checkpoints/ckpt-N.*  tf.train checkpoints at iteration N
  events.out.tfevents.* TensorBoard summaries
  weights.npz, mask.npz result arrays, variable path -> array (a mask only where given)
  metrics.json          final results, with the size and sha256 of each result array file
                        (under "files"); written last, so the run is finished when it is
                        there and the files it lists have their recorded sizes
An IMP run keeps its levels in level_NN[_<baseline>]/ and lottery.json; an
instability analysis its copies in copy_I/ and its parent in parent/.

A description is a nested dict of what determines a run's result: its
hparams and, for runs that start from another run's state, that lineage.
Dataclass fields left at their defaults are omitted before hashing (as in
OpenLTH), so adding an option whose default changes nothing keeps every
existing hash. Output paths and logistics (RunOptions) are never part of it.
"""
import contextlib
import dataclasses
import hashlib
import json
import os

from absl import logging
import tensorflow as tf

from lmc_tf import config as config_lib
from lmc_tf import errors
from lmc_tf import io_utils
from lmc_tf import workers
from lmc_tf.errors import UserError

HPARAMS = 'hparams.json'
METRICS = 'metrics.json'
WEIGHTS = 'weights.npz'
MASK = 'mask.npz'
CHECKPOINTS = 'checkpoints'
OPERATIVE_CONFIG = 'operative_config.gin'
SPARSITY = 'sparsity.json'  # an IMP level's per-layer densities
LOTTERY = 'lottery.json'  # an IMP run's density and metrics per level and baseline
FILES = 'files'  # metrics.json's record of the result array files: name -> size, sha256


def describe(value):
  """A JSON-able description of `value` with dataclass fields at their defaults left out."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    out = {}
    for field in dataclasses.fields(value):
      item = getattr(value, field.name)
      default = field.default
      if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
      if default is dataclasses.MISSING or _plain(item) != _plain(default):
        out[field.name] = describe(item)
    return out
  if isinstance(value, dict):
    return {str(k): describe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [describe(v) for v in value]
  return value


def _plain(value):
  try:
    return json.loads(json.dumps(value))
  except TypeError:
    return repr(value)


def run_hash(description):
  text = json.dumps(describe(description), sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_dir(root, kind, description):
  """`root/<kind>_<hash>`: the one directory of the run that `description` determines."""
  return os.path.join(root, f'{kind}_{run_hash(description)}')


def sweep_plan(root, description):
  """`root/sweep_<hash>.json`: the plan of the sweep `description` determines."""
  return run_dir(root, 'sweep', description) + '.json'


def sweep_plans(root):
  """The plans of every sweep under `root`."""
  return sorted(tf.io.gfile.glob(os.path.join(root, 'sweep_*.json')))


class RunDir:
  """One run directory: where its files are, and how they are claimed, written and read."""

  def __init__(self, path):
    self.path = os.fspath(path)

  def __fspath__(self):
    return self.path

  def __str__(self):
    return self.path

  @property
  def name(self):
    return os.path.basename(self.path.rstrip('/'))

  def file(self, name):
    return os.path.join(self.path, name)

  def exists(self, name):
    return tf.io.gfile.exists(self.file(name))

  # Layouts.

  def level(self, level, baseline='imp'):
    """An IMP run's level `level` (its subnetwork, or a baseline of it)."""
    name = f'level_{level:02d}'
    return RunDir(self.file(name if baseline == 'imp' else f'{name}_{baseline}'))

  def copy(self, index):
    """An instability analysis' copy `index`."""
    return RunDir(self.file(f'copy_{index}'))

  def parent(self):
    """An instability analysis' own parent run: the network trained from init to k."""
    return RunDir(self.file('parent'))

  # Checkpoints.

  @property
  def checkpoint_dir(self):
    return self.file(CHECKPOINTS)

  def checkpoint(self, iteration):
    """The checkpoint at `iteration`, or a UserError naming the fix."""
    path = os.path.join(self.checkpoint_dir, f'ckpt-{iteration}')
    if not tf.io.gfile.exists(path + '.index'):
      raise UserError(f'{self.path} has no checkpoint at iteration {iteration}: add '
                      f"'{iteration}it' to RunOptions.checkpoint_at and train that run again "
                      'in a new directory')
    return path

  def checkpoints(self):
    """The checkpoint paths, latest first."""
    indexes = tf.io.gfile.glob(os.path.join(self.checkpoint_dir, 'ckpt-*.index'))
    paths = [path[:-len('.index')] for path in indexes]
    return sorted(paths, key=lambda path: -int(path.rsplit('-', 1)[1]))

  # Identity.

  def claim(self, description):
    """Makes this the directory of the run `description` (a JSON-able dict: hparams and
    lineage) describes, or refuses one that holds another run. Call it only once every
    input is checked: a refused command must leave nothing that refuses the corrected one."""
    tf.io.gfile.makedirs(self.path)
    if self.exists(HPARAMS):
      found = config_lib.with_later_defaults(self.read_json(HPARAMS), description)
      if found != description:
        diff = '; '.join(config_lib.differences(found, description)[:3])
        raise UserError(f'{self.path} holds a run of a different config ({diff}; found vs '
                        'asked): use a new --model_dir')
    else:
      io_utils.write_json(self.file(HPARAMS), description)

  def lineage(self):
    """How the run's start state was made (its IMP level, rewinding point...), or {}."""
    if not self.exists(HPARAMS):
      return {}
    return self.read_json(HPARAMS).get('lineage') or {}

  # Results.

  def finished(self):
    """Whether metrics.json is there and every result file it lists has its recorded size.

    A result file cut short (a full disk, a copy interrupted) makes the run unfinished:
    run again, it resumes from its last checkpoint and writes its results anew. A file
    of the right size but other contents is caught when it is read (read_arrays)."""
    if not self.exists(METRICS):
      return False
    for name, record in self.read_json(METRICS).get(FILES, {}).items():
      path = self.file(name)
      size = tf.io.gfile.stat(path).length if tf.io.gfile.exists(path) else None
      if size != record['bytes']:
        logging.warning('%s has %s bytes, %d when the run finished: finishing the run again',
                        path, 'no' if size is None else size, record['bytes'])
        return False
    return True

  def write_results(self, metrics, arrays=None):
    """Writes each of `arrays` (file name -> {path: array}), then metrics.json recording
    their sizes and digests: the run is finished once this returns."""
    files = {name: io_utils.write_npz(self.file(name), value)
             for name, value in (arrays or {}).items()}
    io_utils.write_json(self.file(METRICS), dict(metrics, **{FILES: files}) if files else metrics)

  def metrics(self):
    """The run's final metrics (without the record of its files)."""
    metrics = self.read_json(METRICS)
    metrics.pop(FILES, None)
    return metrics

  def read_arrays(self, name):
    """A result array file of a finished run, checked against the digest metrics.json
    records (where it records one); any other .npz (a mask being given) as it is."""
    record = {}
    if self.exists(METRICS):
      record = self.read_json(METRICS).get(FILES, {}).get(name, {})
    return io_utils.read_npz(self.file(name), sha256=record.get('sha256'),
                             fix=f'delete {self.file(METRICS)} and run the same command again '
                                 '(the run finishes again from its last checkpoint)')

  def read_json(self, name):
    return io_utils.read_json(self.file(name))

  def write_json(self, name, value):
    io_utils.write_json(self.file(name), value)

  def write_text(self, name, text):
    io_utils.write_text(self.file(name), text)

  def locked(self, strategy=None):
    return locked(self.path, strategy)


@contextlib.contextmanager
def locked(directory, strategy=None):
  """Holds an exclusive lock on `directory` while the body runs.

  A second process that reaches the same run waits here, then finds it
  finished. The lock is a POSIX file lock, released by the kernel when its
  holder dies (SIGKILL included). Object stores (gs://) have no such lock:
  there, runs are only protected by their atomic writes. In a multi-worker job
  only the chief locks, and every worker enters the body together (a barrier),
  so they all see the run as the chief does while it holds the lock. A directory
  this process may not write (read-only, another user's) is read without the lock.
  """
  if '://' in directory or not workers.is_chief():
    workers.barrier(strategy)
    yield
    return
  import fcntl  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(directory)
  try:
    handle = open(os.path.join(directory, '.lock'), 'w')
  except OSError as e:
    if e.errno not in errors.NOT_PERMITTED_ERRNOS:
      raise
    # A directory we cannot write (a finished run on a read-only mount, or another user's)
    # can only be read through us, and reading needs no lock; a write there fails on its
    # own, with a one-line error from io_utils.
    logging.warning('cannot lock %s (%s): going on without the lock', directory, e.strerror)
    workers.barrier(strategy)
    yield
    return
  with handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      workers.barrier(strategy)
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)

"""lmc_tf/store.py is the one home of run directories: their files, layouts and finished check."""
import ast
import copy
import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from conftest import REPO
from lmc_tf import io_utils
from lmc_tf import store
from lmc_tf.errors import UserError

# The names only store.py may spell: a module that builds a run path itself would break
# when a layout changes. 'copy_' and 'level_' are how f-strings of copy and level
# directories start ('parent' is also a flag's name, so it is not searched for).
RUN_NAMES = {store.HPARAMS, store.METRICS, store.WEIGHTS, store.MASK, store.CHECKPOINTS,
             store.OPERATIVE_CONFIG, store.SPARSITY, store.LOTTERY, 'copy_', 'level_'}


def _strings(path):
  """The string constants of a module's code, its docstrings left out."""
  tree = ast.parse(open(path).read())
  docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                and isinstance(node.body[0], ast.Expr)}
  return [node.value for node in ast.walk(tree)
          if isinstance(node, ast.Constant) and isinstance(node.value, str) and
          id(node) not in docstrings]


def test_no_module_but_store_spells_a_run_directory_name():
  found = []
  for path in glob.glob(os.path.join(REPO, 'lmc_tf', '**', '*.py'), recursive=True):
    if path.endswith(os.path.join('lmc_tf', 'store.py')):
      continue
    for text in _strings(path):
      if text in RUN_NAMES:
        found.append(f'{os.path.relpath(path, REPO)}: {text!r}')
  assert not found


def _finished_run(tmp_path):
  run_dir = store.RunDir(str(tmp_path / 'run'))
  run_dir.claim({'model': 'x'})
  weights = {'fc/kernel': np.arange(12, dtype=np.float32).reshape(3, 4)}
  run_dir.write_results({'test_error': 0.5}, {store.WEIGHTS: weights})
  return run_dir, weights


def test_metrics_record_the_result_files_and_reads_check_them(tmp_path):
  run_dir, weights = _finished_run(tmp_path)
  record = run_dir.read_json(store.METRICS)[store.FILES][store.WEIGHTS]
  assert record['bytes'] == os.path.getsize(run_dir.file(store.WEIGHTS))
  assert run_dir.finished()
  assert run_dir.metrics() == {'test_error': 0.5}
  np.testing.assert_array_equal(run_dir.read_arrays(store.WEIGHTS)['fc/kernel'],
                                weights['fc/kernel'])


def test_a_cut_short_or_missing_result_file_unfinishes_the_run(tmp_path):
  run_dir, _ = _finished_run(tmp_path)
  path = run_dir.file(store.WEIGHTS)
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:-10])
  assert not run_dir.finished()
  os.remove(path)
  assert not run_dir.finished()


def test_a_result_file_of_the_right_size_but_other_bytes_is_named_with_the_fix(tmp_path):
  run_dir, _ = _finished_run(tmp_path)
  path = run_dir.file(store.WEIGHTS)
  data = bytearray(open(path, 'rb').read())
  data[-30] ^= 0xFF  # inside the array's bytes: np.load alone would not notice
  open(path, 'wb').write(bytes(data))
  assert run_dir.finished()  # sizes are checked on every start; digests on every read
  with pytest.raises(UserError, match=f'{path} is corrupt .*: delete .*metrics.json and run '
                     'the same command again'):
    run_dir.read_arrays(store.WEIGHTS)


def test_a_directory_of_another_run_is_refused_by_its_description(tmp_path):
  run_dir = store.RunDir(str(tmp_path))
  run_dir.claim({'training': {'batch_size': 60}})
  run_dir.claim({'training': {'batch_size': 60}})
  with pytest.raises(UserError, match=r'different config \(training.batch_size: 60 vs 64'):
    run_dir.claim({'training': {'batch_size': 64}})


def test_layouts(tmp_path):
  root = store.RunDir(str(tmp_path))
  assert root.level(3).name == 'level_03'
  assert root.level(3, 'random_reinit').name == 'level_03_random_reinit'
  assert root.copy(1).name == 'copy_1'
  assert root.parent().name == 'parent'
  with pytest.raises(UserError, match="no checkpoint at iteration 5: add '5it' to "
                     'RunOptions.checkpoint_at'):
    root.checkpoint(5)


def test_a_run_written_before_the_files_record_is_still_finished(tmp_path):
  run_dir = store.RunDir(str(tmp_path))
  io_utils.write_json(run_dir.file(store.METRICS), {'test_error': 0.5})
  assert run_dir.finished() and run_dir.metrics() == {'test_error': 0.5}


def test_a_run_written_before_a_config_field_existed_is_claimed_at_its_default(tmp_path):
  """hparams.json without a field added since (here TrainingConfig.precision and an
  interpolation option) is the same run as one asking for its default, as in the hashes;
  asking for another value is refused."""
  from lmc_tf import config  # pylint: disable=g-import-not-at-top
  hparams = config.Hparams(config.DatasetConfig(name='fashion_mnist'),
                           config.ModelConfig(name='lenet_300_100'),
                           config.TrainingConfig(batch_size=60, training_steps='10it'))
  interp = json.loads(json.dumps(dataclasses.asdict(config.InterpolationConfig())))  # as stored
  asked = {**hparams.to_dict(), 'lineage': {'interpolation': interp}}
  old = copy.deepcopy(asked)
  del old['training']['precision']
  del old['lineage']['interpolation']['num_alphas']
  run = store.RunDir(str(tmp_path))
  io_utils.write_json(run.file(store.HPARAMS), old)
  run.claim(asked)
  asked['training']['precision'] = 'mixed_bfloat16'
  with pytest.raises(UserError, match='training.precision'):
    run.claim(asked)

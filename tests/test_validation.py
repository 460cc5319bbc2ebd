"""Bad input is refused before anything is trained or written, so that the corrected command
succeeds in the same directory; corrupt state is recovered from or named."""
import dataclasses
import os

import numpy as np
import pytest

from conftest import analysis, lenet, parse, run_binary
from lmc_tf import config as config_lib
from lmc_tf import store
from lmc_tf import io_utils
from lmc_tf import sweeps
from lmc_tf.analysis import instability
from lmc_tf.errors import UserError
from lmc_tf.models import masking
from lmc_tf.pruning import lottery
from lmc_tf.training import trainer

BINDINGS = ["TrainingConfig.training_steps = '60it'", 'DatasetConfig.train_subset = 1200',
            'DatasetConfig.test_eval_examples = 500', 'DatasetConfig.train_eval_examples = 500']


def _setup(fashion_mnist_splits, bindings=()):
  return lenet(fashion_mnist_splits, BINDINGS + list(bindings))


def _interp(**fields):
  return config_lib.InterpolationConfig(**{'num_alphas': 3, 'throughout_training': False,
                                           **fields})


@pytest.mark.parametrize('binding,message', [
    ("TrainingConfig.optimizer = 'adamw'", "unknown optimizer 'adamw'"),
    ('TrainingConfig.batch_size = 0', 'batch_size = 0 is not a positive integer'),
    ("TrainingConfig.batch_size = '60'", "batch_size = '60' is not a positive integer"),
    ("TrainingConfig.lr_schedule = 'cosine'", "unknown lr_schedule 'cosine'"),
    ("ModelConfig.name = 'lenet_3OO'", "unknown model 'lenet_3OO'"),
    ("TrainingConfig.lr = 'fast'", "lr = 'fast' is not a number"),
])
def test_a_refused_config_leaves_the_directory_free(binding, message, tmp_path,
                                                    fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits, [binding])
  with pytest.raises(UserError, match=message):
    trainer.train(hparams, options, str(tmp_path), data)
  assert not (tmp_path / store.HPARAMS).exists()
  hparams, options, data = _setup(fashion_mnist_splits)
  assert trainer.train(hparams, options, str(tmp_path), data)['iterations'] == 60


@pytest.fixture(scope='module')
def small_imp(tmp_path_factory, fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits)
  model_dir = str(tmp_path_factory.mktemp('imp'))
  pruning = config_lib.PruningConfig(rewind='20it')
  lottery.run(hparams, options, pruning, model_dir, data, levels=1)
  return model_dir, hparams, options, pruning, data


def test_a_wrong_mask_then_the_right_one(small_imp, tmp_path):
  model_dir, hparams, options, _, data = small_imp
  right = io_utils.read_npz(os.path.join(store.RunDir(model_dir).level(1).path, store.MASK))
  wrong = dict(right, **{'fc2/kernel': np.ones((300, 99), np.float32)})
  parent = store.RunDir(model_dir).level(0).path
  with pytest.raises(UserError, match='fc2/kernel has shape'):
    analysis(hparams, options, _interp(), str(tmp_path), data, rewind='20it',
                         masks=wrong, parent_dir=parent)
  assert not os.listdir(tmp_path)
  metrics = analysis(hparams, options, _interp(), str(tmp_path), data,
                                 rewind='20it', masks=right, parent_dir=parent).run()
  assert np.isfinite(metrics['instability']['test']['error'])


def test_masks_without_weights_in_a_layer_are_refused(small_imp, tmp_path):
  _, hparams, options, _, data = small_imp
  ones = masking.get_masks(trainer.build_model(hparams, data))
  empty = {p: np.zeros_like(m) for p, m in ones.items()}
  with pytest.raises(UserError, match='keeps no weights'):
    analysis(hparams, options, _interp(), str(tmp_path), data, masks=empty)
  one_empty = dict(ones, **{'fc2/kernel': np.zeros_like(ones['fc2/kernel'])})
  with pytest.raises(UserError, match='fc2/kernel keeps no weights'):
    analysis(hparams, options, _interp(), str(tmp_path), data, masks=one_empty)


@pytest.mark.parametrize('pruning_fields,target,message', [
    ({}, 1e-9, 'leave a layer with no weights'),
    ({'scope': 'layerwise'}, 1e-6, 'leave a layer with no weights'),
    ({'scope': 'per_layer'}, 0.5, "unknown PruningConfig.scope 'per_layer'"),
    ({'style': 'gradual'}, 0.5, "unknown PruningConfig.style 'gradual'"),
    ({'rewind': '60it'}, 0.5, "rewinding point '60it' .* is not before the end"),
])
def test_imp_plans_are_checked_before_level_0_trains(pruning_fields, target, message, tmp_path,
                                                     fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits)
  pruning = config_lib.PruningConfig(**pruning_fields)
  with pytest.raises(UserError, match=message):
    lottery.run(hparams, options, pruning, str(tmp_path / 'imp'), data, target_density=target)
  assert not (tmp_path / 'imp').exists()


def test_a_refused_rewinding_point_then_a_valid_one(small_imp, fashion_mnist_splits):
  model_dir, hparams, options, pruning, data = small_imp
  with pytest.raises(UserError, match='not before the end'):
    lottery.run(hparams, options, dataclasses.replace(pruning, rewind='60it'), model_dir, data,
                levels=1)
  summary = lottery.run(hparams, options, pruning, model_dir, data, levels=1)
  assert sorted(summary['imp']) == ['0', '1']


def test_a_mistyped_parent_is_refused(tmp_path):
  with pytest.raises(UserError, match='--parent=.*holds no run'):
    instability.check_parent(str(tmp_path / 'levle_00'))
  assert not (tmp_path / 'levle_00').exists()


def test_a_sweep_of_unpruned_analyses_trains_its_parent(tmp_path, fashion_mnist_splits):
  # Its analyses name the shared dense run as their parent before anything trained it.
  hparams, options, data = _setup(fashion_mnist_splits)
  sweep = sweeps.Sweep(hparams, options, config_lib.PruningConfig(), _interp(),
                       config_lib.SweepConfig(rewind_points=('20it',)), str(tmp_path), data)
  jobs = sweep.run()
  assert [job.kind for job in jobs] == ['analysis']
  assert (tmp_path / os.path.basename(jobs[0].directory) / 'metrics.json').exists()


@pytest.mark.parametrize('sweep_fields,interp_fields,message', [
    ({}, {'num_alphas': 1}, 'num_alphas >= 2'),
    ({'rewind_points': ('60it',)}, {}, 'not before the end of training'),
    ({'levels': (0, 200)}, {}, 'leave a layer with no weights'),
])
def test_a_sweep_plan_is_checked_before_its_first_job(sweep_fields, interp_fields, message,
                                                      tmp_path, fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits)
  with pytest.raises(UserError, match=message):
    sweeps.Sweep(hparams, options, config_lib.PruningConfig(), _interp(**interp_fields),
                 config_lib.SweepConfig(**sweep_fields), str(tmp_path), data)
  assert not os.listdir(tmp_path)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path,
                                                                  fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits)
  reference = trainer.train(hparams, options, str(tmp_path / 'ref'), data)
  run_dir = tmp_path / 'run'
  trainer.train(hparams, options, str(run_dir), data)
  # Unfinish the run and garble its last checkpoint (60it); 40it (an epoch) is intact.
  (run_dir / store.METRICS).unlink()
  (run_dir / store.WEIGHTS).unlink()
  data_files = list((run_dir / 'checkpoints').glob('ckpt-60.data-*'))
  assert data_files and (run_dir / 'checkpoints' / 'ckpt-40.index').exists()
  for path in data_files:
    path.write_bytes(b'garbage')
  resumed = trainer.train(hparams, options, str(run_dir), data)
  assert resumed['test_loss'] == reference['test_loss']
  a = io_utils.read_npz(str(tmp_path / 'ref' / store.WEIGHTS))
  b = io_utils.read_npz(str(run_dir / store.WEIGHTS))
  assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_finished_run_with_truncated_weights_is_finished_again(tmp_path,
                                                                 fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits)
  metrics = trainer.train(hparams, options, str(tmp_path), data)
  weights = tmp_path / store.WEIGHTS
  whole = io_utils.read_npz(str(weights))
  weights.write_bytes(weights.read_bytes()[:1000])
  assert trainer.train(hparams, options, str(tmp_path), data) == metrics
  again = io_utils.read_npz(str(weights))
  assert all(np.array_equal(whole[k], again[k]) for k in whole)


@pytest.mark.parametrize('name,content', [
    (store.HPARAMS, b'{"dataset": '), (store.HPARAMS, b'\x00\xff garbage'),
    (store.METRICS, b'{"test_error": 0.1'), (store.METRICS, b'\x89PNG'),
])
def test_a_damaged_result_file_of_a_finished_run_is_named_with_the_fix(name, content, tmp_path,
                                                                      fashion_mnist_splits):
  hparams, options, data = _setup(fashion_mnist_splits, ["TrainingConfig.training_steps = '20it'"])
  trainer.train(hparams, options, str(tmp_path), data)
  (tmp_path / name).write_bytes(content)
  with pytest.raises(UserError, match=f'{tmp_path / name} is unreadable .*: delete it .*and run '
                     'the same command again'):
    trainer.train(hparams, options, str(tmp_path), data)


@pytest.mark.slow
def test_an_analysis_interrupted_while_it_evaluates_resumes_bitwise(tmp_path):
  """The copies are finished and the analysis' metrics.json is not yet written: a new process
  evaluates them again, under the same deterministic ops as the first one."""
  args = ['--gin_file=lenet_fashion_mnist.gin', '--gin_file=quick.gin',
          "--gin_bindings=TrainingConfig.training_steps = '100it'",
          '--gin_bindings=InterpolationConfig.num_alphas = 4', f'--model_dir={tmp_path}']
  first = run_binary('lmc_tf.instability', *args)
  assert first.returncode == 0, first.stderr[-1500:]
  metrics = io_utils.read_json(str(tmp_path / store.METRICS))
  (tmp_path / store.METRICS).unlink()
  second = run_binary('lmc_tf.instability', *args)
  assert second.returncode == 0, second.stderr[-1500:]
  again = io_utils.read_json(str(tmp_path / store.METRICS))
  for wall in (metrics, again):
    wall.pop('wall_time_s')
  assert again == metrics


@pytest.mark.parametrize('text,message', [
    ("DatasetConfig.name = ('fashion_mnist'\n", 'bad gin config: .*EOF in multi-line'),
    ("ModelConfig.name = 'lenet_300_100'\nTrainingConfig.batch_size = 60\n"
     "TrainingConfig.training_steps = '10it'\n", 'DatasetConfig.name is not set'),
])
def test_a_malformed_gin_file_is_a_user_error(text, message, tmp_path):
  path = tmp_path / 'bad.gin'
  path.write_text('import lmc_tf.config\n' + text)
  with pytest.raises(UserError, match=message):
    parse(str(path))

"""IMP with rewinding end to end on a small LeNet, and the masks of the customized wrappers."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, analysis, fashion_mnist, parse
from lmc_tf import config as config_lib
from lmc_tf import store
from lmc_tf import io_utils
from lmc_tf import models
from lmc_tf.analysis import instability
from lmc_tf.errors import UserError
from lmc_tf.models import masking
from lmc_tf.pruning import lottery, rules
from lmc_tf.training import trainer

BINDINGS = ["TrainingConfig.training_steps = '300it'", 'DatasetConfig.train_subset = 6000',
            'DatasetConfig.test_eval_examples = 1000', 'DatasetConfig.train_eval_examples = 1000']


@pytest.fixture(scope='module')
def imp_run(tmp_path_factory, fashion_mnist_splits):
  model_dir = str(tmp_path_factory.mktemp('imp'))
  hparams, options = parse('lenet_fashion_mnist.gin', bindings=BINDINGS)
  data = fashion_mnist(fashion_mnist_splits, **{
      k: v for k, v in dataclasses.asdict(hparams.dataset).items() if k != 'name'})
  pruning = config_lib.PruningConfig(rewind='100it')
  summary = lottery.run(hparams, options, pruning, model_dir, data, levels=2,
                        baselines=lottery.BASELINES, baseline_levels={2})
  return model_dir, hparams, options, pruning, data, summary


def _npz(directory, name):
  return io_utils.read_npz(os.path.join(directory, name))


def test_levels_have_the_imp_densities(imp_run):
  model_dir, _, _, _, _, summary = imp_run
  assert sorted(summary['imp']) == ['0', '1', '2']
  assert sorted(summary) == ['imp', 'random_pruning', 'random_reinit']
  masks = _npz(store.RunDir(model_dir).level(2).path, 'mask.npz')
  # lenet_fashion_mnist.gin keeps the output layer whole (PruningConfig.prune_output_layer).
  output = masks['fc_out/kernel'].size
  assert masks['fc_out/kernel'].all()
  total = sum(m.size for m in masks.values()) - output
  assert sum(int(m.sum()) for m in masks.values()) == round(total * 0.64) + output
  report = json.load(open(os.path.join(store.RunDir(model_dir).level(2).path, 'sparsity.json')))
  assert set(report['layers']) == set(masks)


def test_masked_weights_are_exactly_zero_after_training(imp_run):
  model_dir = imp_run[0]
  for variant in ('imp', 'random_pruning', 'random_reinit'):
    directory = store.RunDir(model_dir).level(2, variant).path
    weights, masks = _npz(directory, 'weights.npz'), _npz(directory, 'mask.npz')
    for path, mask in masks.items():
      assert not np.any(weights[path][mask == 0]), f'{variant} {path}'
      assert np.count_nonzero(weights[path][mask == 1]) > 0.99 * mask.sum()


def test_rewinding_restores_the_weights_at_k_for_survivors(imp_run):
  model_dir, hparams, _, _, data, _ = imp_run
  at_k, _ = trainer.weights_at(store.RunDir(model_dir).level(0).path, 100, hparams, data)
  for level in (1, 2):
    directory = store.RunDir(model_dir).level(level).path
    start, masks = trainer.weights_at(directory, 100, hparams, data)
    for path, value in at_k.items():
      expected = value * masks[path] if path in masks else value
      np.testing.assert_array_equal(start[path], expected, err_msg=path)
    # The level was trained from k: no checkpoint before it.
    assert not os.path.exists(os.path.join(directory, 'checkpoints', 'ckpt-0.index'))


def test_random_baselines(imp_run):
  model_dir, hparams, _, _, data, _ = imp_run
  imp_masks = _npz(store.RunDir(model_dir).level(2).path, 'mask.npz')
  random_pruning = _npz(store.RunDir(model_dir).level(2, 'random_pruning').path, 'mask.npz')
  for path in imp_masks:
    assert random_pruning[path].sum() == imp_masks[path].sum()
  assert not np.array_equal(random_pruning['fc1/kernel'], imp_masks['fc1/kernel'])
  reinit_dir = store.RunDir(model_dir).level(2, 'random_reinit').path
  reinit_masks = _npz(reinit_dir, 'mask.npz')
  assert all(np.array_equal(reinit_masks[p], imp_masks[p]) for p in imp_masks)
  reinit_start, _ = trainer.weights_at(reinit_dir, 100, hparams, data)
  imp_start, _ = trainer.weights_at(store.RunDir(model_dir).level(2).path, 100, hparams, data)
  survivors = imp_masks['fc1/kernel'] == 1
  assert not np.allclose(reinit_start['fc1/kernel'][survivors], imp_start['fc1/kernel'][survivors])


def test_baselines_are_independent_draws_per_init_seed(imp_run):
  model_dir, hparams, _, pruning, _, _ = imp_run
  imp_masks = _npz(store.RunDir(model_dir).level(2).path, 'mask.npz')
  drawn = _npz(store.RunDir(model_dir).level(2, 'random_pruning').path, 'mask.npz')
  seed = lottery.baseline_seed(pruning.baseline_seed, hparams.training.init_seed, 2)
  assert all(np.array_equal(drawn[p], m) for p, m in rules.random_masks(imp_masks, seed).items())
  # Another init seed (or level) draws another mask from the same IMP mask.
  for init_seed, level in ((1, 2), (0, 3)):
    other = rules.random_masks(imp_masks, lottery.baseline_seed(pruning.baseline_seed,
                                                                init_seed, level))
    assert not np.array_equal(other['fc1/kernel'], drawn['fc1/kernel'])


@pytest.mark.slow
@pytest.mark.parametrize('baseline', lottery.BASELINES)
def test_an_analysis_of_a_baseline_starts_from_the_imp_runs_draw(baseline, imp_run, tmp_path):
  model_dir, hparams, options, pruning, data, _ = imp_run
  level_dir = store.RunDir(model_dir).level(2)
  assert lottery.level_of_mask(level_dir) == 2
  interp = config_lib.InterpolationConfig(num_alphas=2, throughout_training=False)
  analysis(hparams, options, interp, str(tmp_path), data, rewind='100it',
           masks=level_dir.read_arrays(store.MASK), baseline=baseline, pruning=pruning,
           parent_dir=store.RunDir(model_dir).level(0), level=2).run()
  level_run = store.RunDir(model_dir).level(2, baseline).path
  for copy in ('copy_0', 'copy_1'):
    want, want_masks = trainer.weights_at(level_run, 100, hparams, data)
    got, got_masks = trainer.weights_at(str(tmp_path / copy), 100, hparams, data)
    for path in want:
      np.testing.assert_array_equal(got[path], want[path], err_msg=f'{copy} {path}')
    for path in want_masks:
      np.testing.assert_array_equal(got_masks[path], want_masks[path], err_msg=path)


def test_running_again_trains_nothing(imp_run):
  model_dir, hparams, options, pruning, data, summary = imp_run
  mtimes = {p: os.path.getmtime(os.path.join(model_dir, p, 'weights.npz'))
            for p in os.listdir(model_dir) if p.startswith('level_')}
  again = lottery.run(hparams, options, pruning, model_dir, data, levels=2,
                      baselines=lottery.BASELINES, baseline_levels={2})
  assert again == summary
  assert mtimes == {p: os.path.getmtime(os.path.join(model_dir, p, 'weights.npz')) for p in mtimes}


def test_bad_input(imp_run):
  model_dir, hparams, options, pruning, data, _ = imp_run
  with pytest.raises(UserError, match='holds a run of a different config.*fraction'):
    lottery.run(hparams, options, dataclasses.replace(pruning, fraction=0.5), model_dir, data,
                levels=1)
  with pytest.raises(UserError, match='no checkpoint at iteration 150'):
    lottery.run(hparams, options, dataclasses.replace(pruning, rewind='150it'), model_dir, data,
                levels=1)
  with pytest.raises(UserError, match='outside \\(0, 1\\]'):
    lottery.run(hparams, options, pruning, model_dir, data, target_density=1.5)
  model = trainer.build_model(hparams, data)
  with pytest.raises(UserError, match='does not fit the model'):
    masking.set_masks(model, {'fc1/kernel': np.ones((784, 300), np.float32)})
  bad = {p: np.ones(m.shape, np.float32) for p, m in masking.get_masks(model).items()}
  bad['fc2/kernel'] = np.ones((300, 99), np.float32)
  with pytest.raises(UserError, match='fc2/kernel has shape'):
    masking.set_masks(model, bad)


def test_stock_keras_fit_keeps_pruned_weights_at_zero():
  model = masking.wrap(models.build('lenet_300_100', (28, 28, 1), 10, 0))
  masks = {p: (np.random.default_rng(1).random(m.shape) < 0.3).astype(np.float32)
           for p, m in masking.get_masks(model).items()}
  masking.set_masks(model, masks)
  model.compile(tf.keras.optimizers.SGD(0.1, momentum=0.9),
                tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  rng = np.random.default_rng(0)
  model.fit(rng.random((600, 28, 28, 1)), rng.integers(0, 10, 600), batch_size=60, epochs=2,
            verbose=0)
  for layer in masking.masked_layers(model):
    kernel, mask = layer.layer.kernel.numpy(), masks[layer.kernel_path]
    assert not kernel[mask == 0].any() and kernel[mask == 1].all()


MIRRORED = r'''
import lmc_tf, sys
import numpy as np, tensorflow as tf
from lmc_tf.training import strategy as strategy_lib
strategy_lib.split_cpu(2)
from lmc_tf import cli, data as data_lib
from lmc_tf.models import masking
from lmc_tf.pruning import rules
from lmc_tf.training import trainer
hparams, options = cli.parse_gin(['lenet_fashion_mnist.gin'], sys.argv[2:])
data = data_lib.load(hparams.dataset)
strategy = strategy_lib.make_strategy('mirrored')
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
  model = trainer.build_model(hparams, data)
weights = trainer.weights_dict(model)
masks = rules.random_masks({p: (np.arange(m.size).reshape(m.shape) % 3 == 0).astype(np.float32)
                            for p, m in masking.get_masks(model).items()}, seed=0)
metrics = trainer.train(hparams, options, sys.argv[1], data, strategy,
                        start=trainer.Start(weights, masks, 0))
final = np.load(sys.argv[1] + '/weights.npz')
for path, mask in masks.items():
  assert not final[path][mask == 0].any(), path
  assert np.count_nonzero(final[path][mask == 1]) > 0.99 * mask.sum(), path
print('MIRRORED_OK', metrics['test_error'])
'''


@pytest.mark.slow
def test_masked_weights_stay_zero_under_mirrored_strategy(tmp_path):
  result = subprocess.run(
      [sys.executable, '-c', MIRRORED, str(tmp_path / 'run'), *BINDINGS,
       "TrainingConfig.training_steps = '100it'"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert 'MIRRORED_OK' in result.stdout, result.stderr[-3000:]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))

"""Bad input ends in one line naming the problem and a non-zero exit, from the real binary."""
import pytest

from conftest import run_binary

BASE = ['--gin_file=lenet_fashion_mnist.gin', '--gin_file=quick.gin']

CASES = [
    ('unknown_model', BASE + ["--gin_bindings=ModelConfig.name = 'alexnet'"], "unknown model 'alexnet'"),
    ('unknown_dataset', BASE + ["--gin_bindings=DatasetConfig.name = 'svhn'"], "unknown dataset 'svhn'"),
    ('malformed_binding', BASE + ['--gin_bindings=TrainingConfig.lr = = 3'], 'bad gin config'),
    ('unknown_binding', BASE + ['--gin_bindings=TrainingConfig.learning_rate = 3'], 'bad gin config'),
    ('missing_gin_file', ['--gin_file=nope.gin'], 'gin file nope.gin not found'),
    ('missing_data_dir', BASE + ['--data_dir=/nonexistent/fmnist'], '/nonexistent/fmnist does not exist'),
    ('unparsable_step', BASE + ["--gin_bindings=TrainingConfig.training_steps = '20 epochs'"], "cannot read '20 epochs' as a step"),
    ('rewind_past_end', BASE + ["--gin_bindings=RunOptions.checkpoint_at = ('900it',)"], "rewinding point '900it' is past the end"),
    ('nan_loss', BASE + ["--gin_bindings=TrainingConfig.optimizer = 'sgd'", '--gin_bindings=TrainingConfig.lr = 1e30'], 'at iteration'),
]


@pytest.mark.parametrize('name,args,message', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_nonzero(name, args, message, tmp_path):
  result = run_binary('lmc_tf.train', *args, f'--model_dir={tmp_path / name}')
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last, result.stderr[-1500:]
  assert 'Traceback' not in result.stderr


def test_model_dir_with_another_config_is_refused(tmp_path):
  first = run_binary('lmc_tf.train', *BASE, '--gin_bindings=TrainingConfig.training_steps = "20it"',
                     f'--model_dir={tmp_path}')
  assert first.returncode == 0, first.stderr[-1500:]
  second = run_binary('lmc_tf.train', *BASE, '--gin_bindings=TrainingConfig.training_steps = "30it"',
                      f'--model_dir={tmp_path}')
  assert second.returncode == 1
  assert 'holds a run of a different config' in second.stderr.strip().splitlines()[-1]


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))

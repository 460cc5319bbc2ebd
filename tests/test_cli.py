"""Bad input, Ctrl-C, a full disk or a read-only directory end in one line naming the problem
and the fix, from the real binary; its console holds no TensorFlow C++ log lines."""
import errno
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import REPO
from conftest import run_binary
from lmc_tf import cli

BASE = ['--gin_file=lenet_fashion_mnist.gin', '--gin_file=quick.gin']
TINY = BASE + ["--gin_bindings=TrainingConfig.training_steps = '20it'"]
# The defaults under test: TensorFlow's C++ log lines quieted, no tracebacks.
DEFAULTS = {'TF_CPP_MIN_LOG_LEVEL': None, 'LMC_TF_DEBUG': None}

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


@pytest.mark.slow
@pytest.mark.parametrize('name,args,message', CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_nonzero(name, args, message, tmp_path):
  result = run_binary('lmc_tf.train', *args, f'--model_dir={tmp_path / name}', env=DEFAULTS)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last, result.stderr[-1500:]
  assert 'Traceback' not in result.stderr


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
  result = run_binary('lmc_tf.train', *BASE, '--gin_bindings=TrainingConfig.lr = = 3', '--debug',
                      f'--model_dir={tmp_path}', env=DEFAULTS)
  assert result.returncode == 1
  assert 'Traceback' in result.stderr and 'UserError: bad gin config' in result.stderr


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """(model_dir, CompletedProcess) of a finished 20-iteration run."""
  model_dir = str(tmp_path_factory.mktemp('finished') / 'run')
  result = run_binary('lmc_tf.train', *TINY, f'--model_dir={model_dir}', env=DEFAULTS)
  assert result.returncode == 0, result.stderr[-1500:]
  return model_dir, result


@pytest.mark.slow
def test_console_has_no_tensorflow_cpp_log_lines(finished_run):
  _, result = finished_run
  assert 'Final test error' in result.stderr  # lmc_tf's own log stays
  # e.g. "E0000 00:00:1795580442.959200   21673 node_def_util.cc:682] NodeDef mentions
  # attribute use_unbounded_threadpool", printed at every evaluation.
  cpp_line = re.compile(r'[IWEF]0000 00:00|[IWEF]\d{4} [\d:.]+ +\d+ \S+\.(cc|cpp|h):\d+\] ')
  noise = [line for line in result.stderr.splitlines()
           if cpp_line.match(line) or 'use_unbounded_threadpool' in line
           or 'absl::InitializeLog' in line or 'Sharding callback' in line]
  assert not noise, '\n'.join(noise)


@pytest.mark.slow
def test_model_dir_with_another_config_is_refused(finished_run):
  model_dir, _ = finished_run
  second = run_binary('lmc_tf.train', *BASE, '--gin_bindings=TrainingConfig.training_steps = "30it"',
                      f'--model_dir={model_dir}', env=DEFAULTS)
  assert second.returncode == 1
  assert 'holds a run of a different config' in second.stderr.strip().splitlines()[-1]


def _read_only_mount_works(directory):
  """Whether this process (root) may mount `directory` read-only in a mount namespace of its
  own: root writes through any file mode, so only a read-only mount stops it."""
  probe = ['unshare', '-m', 'sh', '-c',
           'mount --bind -o ro "$0" "$0" && ! touch "$0/.probe" 2>/dev/null', directory]
  try:
    return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
  except FileNotFoundError:  # no unshare
    return False


@pytest.mark.slow
def test_a_finished_run_in_a_read_only_directory_is_read(finished_run):
  model_dir, _ = finished_run
  args = ['-m', 'lmc_tf.train', *TINY, f'--model_dir={model_dir}']
  if os.geteuid() == 0:
    if not _read_only_mount_works(model_dir):
      pytest.skip('as root, only a read-only mount makes a directory unwritable, and '
                  'unshare -m cannot mount here')
    command = ['unshare', '-m', 'sh', '-c', 'mount --bind -o ro "$0" "$0" && exec "$@"',
               model_dir, sys.executable, *args]
  else:
    command = [sys.executable, *args]
    subprocess.run(['chmod', '-R', 'a-w', model_dir], check=True)
  try:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  finally:
    subprocess.run(['chmod', '-R', 'u+w', model_dir], check=True)
  assert result.returncode == 0, result.stderr[-1500:]
  assert 'already finished' in result.stderr and 'cannot lock' in result.stderr


def _interrupted(command, started, wait_s):
  """Runs `command`, sends it Ctrl-C once `started()` holds, and checks that it ends within
  `wait_s` in one line with exit status 130. Returns the environment it ran in."""
  environment = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
  # A process started with SIGINT ignored (a background job of a script, nohup) keeps it
  # ignored and Python installs no KeyboardInterrupt handler: give the child the default.
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=environment,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    deadline = time.time() + 300
    while not started():
      assert process.poll() is None and time.time() < deadline, 'it did not start training'
      time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=wait_s)
  finally:
    process.kill()
    process.wait()
  assert process.returncode == 130, stderr[-1500:]
  assert stderr.strip().splitlines()[-1].startswith('error: interrupted'), stderr[-1500:]
  assert 'Traceback' not in stderr
  return environment


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_the_same_command_resumes(tmp_path):
  model_dir = tmp_path / 'run'
  command = [sys.executable, '-m', 'lmc_tf.train', *BASE,
             "--gin_bindings=TrainingConfig.training_steps = '1000it'",
             '--gin_bindings=DatasetConfig.train_subset = 6000', f'--model_dir={model_dir}']
  environment = _interrupted(
      command, lambda: (model_dir / 'checkpoints' / 'ckpt-0.index').exists(), wait_s=120)
  assert not (model_dir / 'metrics.json').exists()  # it stopped before the end

  resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                           env=environment)
  assert resumed.returncode == 0, resumed.stderr[-1500:]
  assert (model_dir / 'metrics.json').exists() and 'Resuming' in resumed.stderr


@pytest.mark.slow
def test_ctrl_c_stops_an_analysis_whose_copies_train_side_by_side(tmp_path):
  """With the copies in threads (RunOptions.parallel_copies), Ctrl-C ends the process at
  once, not after both copies have trained to the end (minutes here)."""
  model_dir = tmp_path / 'analysis'
  command = [sys.executable, '-m', 'lmc_tf.instability', *BASE, '--threads=1',
             "--gin_bindings=TrainingConfig.training_steps = '100000it'",
             '--gin_bindings=DatasetConfig.train_subset = 6000', f'--model_dir={model_dir}']
  _interrupted(command, lambda: all(
      (model_dir / f'copy_{i}' / 'checkpoints' / 'ckpt-0.index').exists() for i in (0, 1)),
               wait_s=60)


@pytest.mark.slow
def test_the_binaries_run_from_any_directory():
  """setup.sh installs lmc_tf into .venv (editable): no need to start in the checkout."""
  result = subprocess.run([sys.executable, '-m', 'lmc_tf.train', '--help'], cwd='/tmp',
                          capture_output=True, text=True, timeout=300)
  assert 'No module named' not in result.stderr, 'lmc_tf is not installed: run ./setup.sh'
  assert 'Trains one network' in result.stdout + result.stderr  # absl's --help exits 1


@pytest.fixture
def run_main_in_process(monkeypatch):
  """cli.run_main(main)(argv) here, with flags at their defaults and no device setup."""
  parsed = cli.FLAGS.is_parsed()
  if not parsed:
    cli.FLAGS.mark_as_parsed()
  monkeypatch.setattr(cli, 'configure_devices', lambda: None)
  monkeypatch.delenv('LMC_TF_DEBUG', raising=False)

  def run(error):
    def main(_):
      raise error
    cli.run_main(main)(['binary'])

  yield run
  if not parsed:
    cli.FLAGS.unparse_flags()


def _one_line_exit(run, error, capsys):
  with pytest.raises(SystemExit) as raised:
    run(error)
  stderr = capsys.readouterr().err
  assert stderr.count('\n') == 1 and stderr.startswith('error: '), stderr
  return raised.value.code, stderr


def test_ctrl_c_in_process_exits_130(run_main_in_process, capsys):
  code, stderr = _one_line_exit(run_main_in_process, KeyboardInterrupt(), capsys)
  assert code == 130 and stderr == 'error: interrupted; run the same command to resume\n'


@pytest.mark.parametrize('error,words', [
    (OSError(errno.ENOSPC, 'No space left on device'), 'free space'),
    (OSError(errno.EROFS, 'Read-only file system'), 'fix the permissions'),
    (PermissionError(errno.EACCES, 'Permission denied'), 'fix the permissions'),
    (tf.errors.PermissionDeniedError(None, None, 'gs://bucket/run: 403'), 'fix the permissions'),
    (tf.errors.ResourceExhaustedError(None, None, 'ckpt-9.data: No space left on device'),
     'free space'),
], ids=['enospc', 'erofs', 'eacces', 'tf_permission', 'tf_disk_full'])
def test_disk_and_permission_problems_are_one_line(run_main_in_process, capsys, error, words):
  code, stderr = _one_line_exit(run_main_in_process, error, capsys)
  assert code == 1 and words in stderr and 'run the same command again to resume' in stderr


def test_out_of_memory_does_not_read_as_a_full_disk(run_main_in_process, capsys):
  error = tf.errors.ResourceExhaustedError(
      None, None, 'OOM when allocating tensor with shape[1024,1024,1024] and type float')
  code, stderr = _one_line_exit(run_main_in_process, error, capsys)
  assert code == 1 and 'out of memory (OOM when allocating' in stderr and 'space' not in stderr


def test_debug_and_unknown_errors_raise(run_main_in_process, monkeypatch):
  with pytest.raises(ValueError):
    run_main_in_process(ValueError('a bug'))
  monkeypatch.setenv('LMC_TF_DEBUG', '1')
  with pytest.raises(OSError):
    run_main_in_process(OSError(errno.ENOSPC, 'No space left on device'))
  with pytest.raises(KeyboardInterrupt):
    run_main_in_process(KeyboardInterrupt())


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))


def test_the_strategy_is_made_before_the_data_is_read(run_main_in_process, monkeypatch):
  """TensorFlow's TPU guide: connect to and initialize the TPU system before anything else."""
  from lmc_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from lmc_tf.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  del run_main_in_process  # for its parsed flags
  calls = []
  monkeypatch.setattr(strategy_lib, 'make_strategy', lambda *args: calls.append('strategy'))
  monkeypatch.setattr(data_lib, 'load', lambda *args: calls.append('data'))
  cli.data_and_strategy(cli.config_lib.Hparams(None, None, None))
  assert calls == ['strategy', 'data']

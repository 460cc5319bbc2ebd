"""tpu/launch.py: the gcloud commands its --dry_run prints for a v3-8 and a v4-32 pod slice.

The launcher runs as a subprocess, as a person would run it; no TensorFlow and no Cloud
access are needed. The remote commands are also run here by bash against a fake worker
(a fake metadata server answer and a fake Python) to check their quoting and expansion.
"""
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'tpu', 'launch.py')
TFDS = 'gs://my-bucket/tensorflow_datasets'
SWEEP_DIR = 'gs://my-bucket/runs/resnet20_sweep'
V3 = ['--name=lmc-v3', '--zone=europe-west4-a', '--accelerator_type=v3-8']
V4 = ['--name=lmc-v4', '--zone=us-central2-b', '--accelerator_type=v4-32']
SWEEP_FLAGS = ['--', '--gin_file=resnet20_cifar10.gin', '--gin_file=my sweep.gin',
               f'--model_dir={SWEEP_DIR}']
METADATA = ('W=$(curl -sf -H "Metadata-Flavor: Google" http://metadata.google.internal/'
            'computeMetadata/v1/instance/attributes/agent-worker-number)')
_spec = importlib.util.spec_from_file_location('launch', LAUNCH)
launch_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch_module)
# The worker's shell finds libtpu: site-packages/libtpu/libtpu.so for a pip-installed
# tensorflow-tpu (the path Google's TensorFlow TPU configurations set), else the image's.
PJRT = ('NEXT_PLUGGABLE_DEVICE_USE_C_API=true '
        f'TF_PLUGGABLE_DEVICE_LIBRARY_PATH="{launch_module.LIBTPU_PATH}"')
ARCHIVE = os.path.join(tempfile.gettempdir(), 'lmc_tf-{}.tar.gz')
INSTALL = ('mkdir -p ~/lmc_tf && find ~/lmc_tf -mindepth 1 -maxdepth 1 ! -name .venv -exec '
           'rm -rf {} + && tar -xzf ~/lmc_tf.tar.gz -C ~/lmc_tf && '
           'bash ~/lmc_tf/tpu/install_on_worker.sh')


def launch(*args, env=None):
  return subprocess.run([sys.executable, LAUNCH, *args], capture_output=True, text=True,
                        timeout=60, env=env)


def dry_run(*args):
  """The commands of a dry run; --dry_run goes before `--` (after it, it is the binary's)."""
  args = list(args)
  at = args.index('--') if '--' in args else len(args)
  result = launch(*args[:at], '--dry_run', *args[at:])
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''
  return [shlex.split(line) for line in result.stdout.splitlines()]


def gcloud(verb, name, zone, *rest):
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, name, f'--zone={zone}', *rest]


def test_v3_8_create_install_delete():
  assert dry_run('create', *V3) == [gcloud(
      'create', 'lmc-v3', 'europe-west4-a', '--accelerator-type=v3-8',
      '--version=tpu-vm-tf-2.16.1-pjrt')]
  archive = ARCHIVE.format('lmc-v3')
  assert dry_run('install', *V3) == [
      ['git', '-C', REPO, 'archive', '--format=tar.gz', f'--output={archive}', 'HEAD'],
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', archive, 'lmc-v3:lmc_tf.tar.gz',
       '--zone=europe-west4-a', '--worker=all'],
      gcloud('ssh', 'lmc-v3', 'europe-west4-a', '--worker=all', f'--command={INSTALL}'),
  ]
  assert dry_run('delete', *V3) == [gcloud('delete', 'lmc-v3', 'europe-west4-a', '--quiet')]


def test_v3_8_sweep_runs_on_every_worker_with_its_index():
  [command] = dry_run('sweep', *V3, f'--tfds_data_dir={TFDS}', *SWEEP_FLAGS)
  assert command == gcloud('ssh', 'lmc-v3', 'europe-west4-a', '--worker=all', command[-1])
  assert command[-1] == (
      f'--command=cd ~/lmc_tf && export {PJRT} TFDS_DATA_DIR={TFDS} && {METADATA} && '
      ".venv/bin/python -m lmc_tf.sweep --gin_file=resnet20_cifar10.gin '--gin_file=my sweep.gin' "
      f'--model_dir={SWEEP_DIR} --strategy=tpu --tpu=local --tfds_data_dir={TFDS} '
      '--worker_index="$W" --num_workers=1')


def test_v3_8_run_instability():
  [command] = dry_run('run', *V3, '--binary=instability', f'--tfds_data_dir={TFDS}', '--',
                      '--gin_file=resnet20_cifar10.gin', '--model_dir=gs://my-bucket/runs/k0')
  assert command == gcloud('ssh', 'lmc-v3', 'europe-west4-a', '--worker=all', (
      f'--command=cd ~/lmc_tf && export {PJRT} TFDS_DATA_DIR={TFDS} && '
      '.venv/bin/python -m lmc_tf.instability --gin_file=resnet20_cifar10.gin '
      f'--model_dir=gs://my-bucket/runs/k0 --strategy=tpu --tpu=local --tfds_data_dir={TFDS}'))


def test_v4_32_create_install_delete():
  assert dry_run('create', *V4, '--project=my-project', '--spot') == [gcloud(
      'create', 'lmc-v4', 'us-central2-b', '--project=my-project', '--accelerator-type=v4-32',
      # The multi-host runtime Google's TPU software versions page names, and the one of
      # Google's own TensorFlow pod test configurations.
      '--version=tpu-vm-tf-2.16.0-pod-pjrt', '--spot')]
  archive = ARCHIVE.format('lmc-v4')
  install = dry_run('install', *V4)
  assert install[1] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', archive,
                        'lmc-v4:lmc_tf.tar.gz', '--zone=us-central2-b', '--worker=all']
  assert install[2] == gcloud('ssh', 'lmc-v4', 'us-central2-b', '--worker=all',
                              f'--command={INSTALL}')
  assert dry_run('delete', *V4) == [gcloud('delete', 'lmc-v4', 'us-central2-b', '--quiet')]


def test_v4_32_sweep_over_the_whole_slice_from_worker_0():
  [command] = dry_run('sweep', *V4, f'--tfds_data_dir={TFDS}', *SWEEP_FLAGS)
  assert command == gcloud('ssh', 'lmc-v4', 'us-central2-b', '--worker=0', (
      f'--command=cd ~/lmc_tf && export TPU_LOAD_LIBRARY=0 TFDS_DATA_DIR={TFDS} && '
      ".venv/bin/python -m lmc_tf.sweep --gin_file=resnet20_cifar10.gin '--gin_file=my sweep.gin' "
      f'--model_dir={SWEEP_DIR} --strategy=tpu --tpu=lmc-v4 --tfds_data_dir={TFDS} '
      '--worker_index=0 --num_workers=1'))


def test_v4_32_sweep_split_over_its_4_hosts():
  assert dry_run('create', *V4, '--pod_mode=per_host') == [gcloud(
      'create', 'lmc-v4', 'us-central2-b', '--accelerator-type=v4-32',
      '--version=tpu-vm-tf-2.16.1-pjrt')]
  [command] = dry_run('sweep', *V4, '--pod_mode=per_host', f'--tfds_data_dir={TFDS}',
                      *SWEEP_FLAGS)
  assert command == gcloud('ssh', 'lmc-v4', 'us-central2-b', '--worker=all', (
      f'--command=cd ~/lmc_tf && export {PJRT} TPU_PROCESS_BOUNDS=1,1,1 '
      'TPU_CHIPS_PER_PROCESS_BOUNDS=2,2,1 TPU_VISIBLE_CHIPS=0,1,2,3 '
      f'TFDS_DATA_DIR={TFDS} && {METADATA} && '
      ".venv/bin/python -m lmc_tf.sweep --gin_file=resnet20_cifar10.gin '--gin_file=my sweep.gin' "
      f'--model_dir={SWEEP_DIR} --strategy=tpu --tpu=local --tfds_data_dir={TFDS} '
      '--worker_index="$W" --num_workers=4'))


def _run_on_fake_worker(tmp_path, remote, worker_number, extra_env=None):
  """Runs a --command payload with bash as a worker would, with curl and python faked."""
  home = tmp_path / 'home'
  venv_bin = home / 'lmc_tf' / '.venv' / 'bin'
  venv_bin.mkdir(parents=True)
  fake_bin = tmp_path / 'bin'
  fake_bin.mkdir()
  (fake_bin / 'curl').write_text(f'#!/bin/sh\necho {worker_number}\n')
  # The fake Python runs `-c` snippets (the libtpu lookup) with the real one.
  (venv_bin / 'python').write_text(
      f'#!/bin/sh\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\n'
      'echo "cwd=$(pwd)"\necho "TFDS_DATA_DIR=$TFDS_DATA_DIR"\n'
      'echo "TPU_VISIBLE_CHIPS=$TPU_VISIBLE_CHIPS"\n'
      'echo "LIBTPU=$TF_PLUGGABLE_DEVICE_LIBRARY_PATH"\nfor a in "$@"; do echo "arg=$a"; done\n')
  for script in (fake_bin / 'curl', venv_bin / 'python'):
    script.chmod(0o755)
  env = {'HOME': str(home), 'PATH': f'{fake_bin}:/usr/bin:/bin', **(extra_env or {})}
  result = subprocess.run(['bash', '-c', remote], capture_output=True, text=True, env=env,
                          timeout=30)
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def test_split_sweep_command_expands_on_a_worker(tmp_path):
  [command] = dry_run('sweep', *V4, '--pod_mode=per_host', f'--tfds_data_dir={TFDS}',
                      *SWEEP_FLAGS)
  lines = _run_on_fake_worker(tmp_path, command[-1][len('--command='):], 3)
  assert lines == [
      f'cwd={tmp_path}/home/lmc_tf', f'TFDS_DATA_DIR={TFDS}', 'TPU_VISIBLE_CHIPS=0,1,2,3',
      'LIBTPU=/lib/libtpu.so', 'arg=-m', 'arg=lmc_tf.sweep', 'arg=--gin_file=resnet20_cifar10.gin',
      'arg=--gin_file=my sweep.gin', f'arg=--model_dir={SWEEP_DIR}', 'arg=--strategy=tpu',
      'arg=--tpu=local', f'arg=--tfds_data_dir={TFDS}', 'arg=--worker_index=3',
      'arg=--num_workers=4']


def test_a_pip_installed_libtpu_is_found_in_site_packages(tmp_path):
  site_packages = tmp_path / 'site-packages'
  (site_packages / 'libtpu').mkdir(parents=True)
  (site_packages / 'libtpu' / '__init__.py').write_text('')
  [command] = dry_run('run', *V3, '--binary=train', '--', '--model_dir=gs://b/r')
  lines = _run_on_fake_worker(tmp_path, command[-1][len('--command='):], 0,
                              {'PYTHONPATH': str(site_packages)})
  assert f'LIBTPU={site_packages}/libtpu/libtpu.so' in lines


def test_versions_lists_the_runtimes_of_a_zone():
  assert dry_run('versions', '--zone=us-central2-b', '--project=p') == [
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'versions', 'list', '--zone=us-central2-b',
       '--project=p']]


def test_another_runtime_is_taken_with_a_warning():
  result = launch('create', *V4, '--runtime_version=tpu-vm-tf-2.18.0-pod-pjrt', '--dry_run')
  assert result.returncode == 0
  assert '--version=tpu-vm-tf-2.18.0-pod-pjrt' in result.stdout
  assert result.stderr.startswith('warning: tpu-vm-tf-2.18.0-pod-pjrt is not one of the')


def test_install_command_is_valid_bash():
  for tpu in (V3, V4):
    command = dry_run('install', *tpu)[2][-1][len('--command='):]
    subprocess.run(['bash', '-n', '-c', command], check=True)
  subprocess.run(['bash', '-n', os.path.join(REPO, 'tpu', 'install_on_worker.sh')], check=True)


@pytest.mark.parametrize('args,message', [
    (['create', '--name=x', '--zone=z', '--accelerator_type=v9-8'],
     "unknown accelerator type 'v9-8'"),
    (['create', '--name=x', '--zone=z', '--accelerator_type=v3-16'],
     "unknown accelerator type 'v3-16'"),
    (['create', '--name=x', '--zone=z', '--accelerator_type=v5litepod-16'],
     "'v5litepod-16' is not supported here"),
    (['create', '--name=My_TPU', '--zone=z', '--accelerator_type=v3-8'], "bad TPU name 'My_TPU'"),
    (['run', *V3, '--binary=evaluate', '--', '--model_dir=x'], "unknown binary 'evaluate'"),
    (['sweep', *V3, '--', '--model_dir=gs://b/s', '--num_workers=2'],
     '--num_workers is set by the launcher'),
    (['sweep', *V4, '--pod_mode=per_host', '--', '--model_dir=runs/sweep'],
     'needs a --model_dir that every host sees'),
    (['sweep', *V4, '--pod_mode=per_host', '--version=tpu-vm-tf-2.16.0-pod-pjrt', '--',
      '--model_dir=gs://b/s'], 'needs a runtime without -pod'),
    (['create', *V4, '--version=tpu-vm-tf-2.16.1-pjrt'], '--pod_mode=slice drives every host'),
    (['delete', *V3, '--', '--model_dir=x'], 'delete takes no binary flags'),
    # On a pod slice, checkpoint I/O runs on each variable's host and every host reads data.
    (['run', *V4, '--binary=train', '--', '--model_dir=runs/x'],
     '--model_dir=runs/x is not on Cloud Storage'),
    (['sweep', *V4, '--tfds_data_dir=/data/tfds', '--', '--model_dir=gs://b/s'],
     '--tfds_data_dir=/data/tfds is not on Cloud Storage'),
    (['run', *V4, '--binary=train', '--', '--model_dir=gs://b/r', '--data_dir=/data'],
     '--data_dir=/data is not on Cloud Storage'),
    (['create', *V3, '--runtime_version=tf-2.16'], 'is not a TensorFlow TPU VM runtime'),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
  at = args.index('--') if '--' in args else len(args)
  result = launch(*args[:at], '--dry_run', *args[at:])
  assert result.returncode != 0
  assert result.stdout == ''
  assert result.stderr.count('\n') == 1 and result.stderr.startswith('error: '), result.stderr
  assert message in result.stderr


def test_without_gcloud_nothing_runs(tmp_path):
  result = launch('delete', *V3, env={'PATH': str(tmp_path)})
  assert result.returncode == 1
  assert result.stderr.startswith('error: gcloud not found: install the Google Cloud CLI')
  assert result.stdout == ''


def test_stops_at_the_first_failing_command(tmp_path):
  fake = tmp_path / 'gcloud'
  fake.write_text('#!/bin/sh\necho "gcloud $*" >> "$(dirname "$0")/calls"\nexit 7\n')
  fake.chmod(0o755)
  result = launch('create', *V3, env={'PATH': f'{tmp_path}:/usr/bin:/bin'})
  assert result.returncode == 1
  assert result.stderr.startswith('error: command 1/1 failed with exit status 7: gcloud compute')
  assert (tmp_path / 'calls').read_text().startswith('gcloud compute tpus tpu-vm create lmc-v3')


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))

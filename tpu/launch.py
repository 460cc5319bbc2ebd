#!/usr/bin/env python3
r"""Creates Cloud TPU VMs, installs lmc_tf on their workers, runs binaries and sweeps on them.

  python tpu/launch.py create  --name=lmc --zone=us-central2-b --accelerator_type=v4-32 [--spot]
  python tpu/launch.py install --name=lmc --zone=us-central2-b --accelerator_type=v4-32
  python tpu/launch.py run     --name=lmc --zone=us-central2-b --accelerator_type=v4-32 \
      --binary=instability --tfds_data_dir=gs://BUCKET/tensorflow_datasets \
      -- --gin_file=resnet20_cifar10.gin --model_dir=gs://BUCKET/runs/resnet20_k0
  python tpu/launch.py sweep   --name=lmc ... -- --gin_file=... --model_dir=gs://BUCKET/runs/sweep
  python tpu/launch.py delete  --name=lmc --zone=us-central2-b --accelerator_type=v4-32
  python tpu/launch.py versions --zone=us-central2-b   # the runtimes gcloud offers there

Every subcommand takes --dry_run: print the commands, one per line, shell-quoted, and run
nothing. Without it they run in order and the first failure stops the launcher with one
line naming the command. Everything after `--` goes to the lmc_tf binary unchanged.

What runs where (see tpu/README.md for the sources):
  * single-host slices (v2-8, v3-8, v4-8, v5p-8, v5litepod-1/4/8): the command runs on every
    worker (`--worker=all`; there is one) with --strategy=tpu --tpu=local;
  * multi-host slices, --pod_mode=slice (default): the documented TensorFlow pattern for
    pods: one process on worker 0 drives every host's chips through --tpu=NAME, with
    TPU_LOAD_LIBRARY=0 and a `-pod` runtime; a sweep then runs all its jobs over the slice;
  * multi-host slices, --pod_mode=per_host (experimental, untested): every host runs its own
    share of a sweep on its own 4 chips (--worker=all, --worker_index from the metadata
    server's agent-worker-number, --num_workers = hosts), confined to them by libtpu's
    TPU_PROCESS_BOUNDS / TPU_CHIPS_PER_PROCESS_BOUNDS / TPU_VISIBLE_CHIPS, on a non-pod
    runtime.

This file imports no TensorFlow: it only builds and runs gcloud and git commands.
"""
import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runtime ("software") versions: tpu-vm-tf-x.y.z[-pod][-pjrt|-se]; `-pod` marks a multi-host
# slice. `gcloud compute tpus tpu-vm versions list --zone=ZONE` is the authority (the
# `versions` subcommand runs it); these are the runtimes Google's documentation names:
#  - tpu-vm-tf-2.16.1-pjrt: the single-host TensorFlow runtime of the TPU software versions
#    page (https://cloud.google.com/tpu/docs/runtimes) and of the TensorFlow quickstart;
#  - tpu-vm-tf-2.16.0-pod-pjrt: the multi-host example of the same page ("if you are using
#    TensorFlow 2.16.0 on a multi-host TPU, use tpu-vm-tf-2.16.0-pod-pjrt"), also the runtime
#    of Google's own TensorFlow pod test configurations. No 2.16.1 pod runtime is named.
# Newer tensorflow-tpu wheels (up to 2.20) exist on PyPI, but their pod images have open
# TensorFlow issues (a segfault on import with 2.18, a hang in experimental_connect_to_cluster
# with 2.19); --runtime_version picks another runtime at your own risk.
SINGLE_HOST_RUNTIME = 'tpu-vm-tf-2.16.1-pjrt'
POD_RUNTIME = 'tpu-vm-tf-2.16.0-pod-pjrt'
DOCUMENTED_RUNTIMES = (SINGLE_HOST_RUNTIME, POD_RUNTIME)
RUNTIME_PATTERN = r'tpu-vm-tf-\d+\.\d+\.\d+(-pod)?(-pjrt|-se)?'
# Where a pip-installed tensorflow-tpu's libtpu lives: site-packages/libtpu/libtpu.so (as
# Google's TensorFlow TPU configurations set TF_PLUGGABLE_DEVICE_LIBRARY_PATH); the runtime
# images carry it at /lib/libtpu.so. The worker's shell picks the one it has.
LIBTPU_PATH = ('$(.venv/bin/python -c "import importlib.util as u; s = u.find_spec(\'libtpu\'); '
               'print(s.submodule_search_locations[0] + \'/libtpu.so\' if s else \'/lib/libtpu.so\')")')

# Each TPU VM host has 4 chips (v2, v3: 2 TensorCores each, 8 cores per host; v4, v5p: 2
# TensorCores each); the suffix of v2/v3/v4/v5p types counts TensorCores, so hosts = N / 8
# (torch_xla's host bounds: v3-32 is 2x2x1 hosts; Cloud TPU docs: v4 chips have two
# TensorCores, v5p-8 is 4 chips on one host). v5e (v5litepod-N) counts chips; only its
# single-host shapes are accepted here, as its multi-host VM sizes vary.
_CORE_COUNTED = {'v2': (8, 32, 128, 256, 512),
                 'v3': (8, 32, 64, 128, 256, 512, 1024, 2048)}
_V5E_SINGLE_HOST = (1, 4, 8)
CHIPS_PER_HOST_BOUNDS = '2,2,1'  # a host's 4 chips (v2, v3, v4, v5p)

# Where a TPU VM host learns its worker number (0 .. hosts-1) in its slice.
WORKER_NUMBER_URL = ('http://metadata.google.internal/computeMetadata/v1/instance/attributes/'
                     'agent-worker-number')

BINARIES = ('train', 'imp', 'instability', 'sweep', 'report', 'tables')
TPU_BINARIES = ('train', 'imp', 'instability', 'sweep')  # the ones that take --strategy
LAUNCHER_SET_FLAGS = ('--strategy', '--tpu', '--worker_index', '--num_workers', '--processes')
REMOTE_DIR = '~/lmc_tf'
LOG_DIR = '~/lmc_tf_logs'


class LaunchError(Exception):
  """Bad input or a failed command: reported as one line and exit status 1."""


@dataclasses.dataclass(frozen=True)
class Slice:
  accelerator_type: str
  hosts: int
  chips: int


def parse_accelerator_type(accelerator_type):
  """The Slice of an accelerator type such as v3-8, v4-32 or v5litepod-8."""
  match = re.fullmatch(r'(v2|v3|v4|v5p|v5litepod)-(\d+)', accelerator_type or '')
  supported = ('use v2-N or v3-N (N = 8, 32, 64, ...), v4-N or v5p-N (N a multiple of 8), or '
               'v5litepod-1, -4 or -8')
  if not match:
    raise LaunchError(f'unknown accelerator type {accelerator_type!r}: {supported}')
  family, count = match.group(1), int(match.group(2))
  if family == 'v5litepod':
    if count not in _V5E_SINGLE_HOST:
      raise LaunchError(f'accelerator type {accelerator_type!r} is not supported here (only '
                        'single-host v5e slices are): ' + supported)
    return Slice(accelerator_type, 1, count)
  valid = count in _CORE_COUNTED[family] if family in _CORE_COUNTED else (
      count >= 8 and count % 8 == 0)
  if not valid:
    raise LaunchError(f'unknown accelerator type {accelerator_type!r}: {supported}')
  return Slice(accelerator_type, count // 8, count // 2)


def _gcloud(verb, *operands, args):
  """`gcloud compute tpus tpu-vm VERB OPERANDS --zone=ZONE [--project=PROJECT]`."""
  project = [f'--project={args.project}'] if args.project else []
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, *operands, f'--zone={args.zone}'] + project


def runtime_version(args, tpu):
  """--runtime_version (a tpu-vm-tf-* name), or the documented runtime for the slice."""
  if args.runtime_version:
    if not re.fullmatch(RUNTIME_PATTERN, args.runtime_version):
      raise LaunchError(f'--runtime_version={args.runtime_version} is not a TensorFlow TPU VM '
                        'runtime (tpu-vm-tf-X.Y.Z[-pod][-pjrt]): see `tpu/launch.py versions '
                        '--zone=ZONE`')
    return args.runtime_version
  if tpu.hosts > 1 and args.pod_mode == 'slice':
    return POD_RUNTIME
  return SINGLE_HOST_RUNTIME


def create_commands(args, tpu):
  command = _gcloud('create', args.name, args=args) + [
      f'--accelerator-type={tpu.accelerator_type}', f'--version={runtime_version(args, tpu)}']
  if args.spot:
    command.append('--spot')
  if args.preemptible:
    command.append('--preemptible')
  return [command]


def archive_path(args):
  return os.path.join(tempfile.gettempdir(), f'lmc_tf-{args.name}.tar.gz')


def install_commands(args, tpu):
  del tpu  # every worker gets the project
  archive = archive_path(args)
  env = f'TENSORFLOW_TPU={shlex.quote(args.tensorflow_tpu)} ' if args.tensorflow_tpu else ''
  setup = (f'mkdir -p {REMOTE_DIR} && '
           f'find {REMOTE_DIR} -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {{}} + && '
           f'tar -xzf ~/lmc_tf.tar.gz -C {REMOTE_DIR} && '
           f'{env}bash {REMOTE_DIR}/tpu/install_on_worker.sh')
  return [
      ['git', '-C', REPO, 'archive', '--format=tar.gz', f'--output={archive}', args.ref],
      _gcloud('scp', archive, f'{args.name}:lmc_tf.tar.gz', args=args) + ['--worker=all'],
      _gcloud('ssh', args.name, args=args) + ['--worker=all', f'--command={setup}'],
  ]


def delete_commands(args, tpu):
  del tpu
  return [_gcloud('delete', args.name, args=args) + ['--quiet']]


def _layout(args, tpu):
  """'local' (single host), 'slice' (pod driven from worker 0) or 'per_host' (pod, split)."""
  if tpu.hosts == 1:
    return 'local'
  version = runtime_version(args, tpu)
  if args.pod_mode == 'slice':
    if '-pod' not in version:
      raise LaunchError(f'--pod_mode=slice drives every host from worker 0 and needs a -pod '
                        f'runtime, not --runtime_version={version} (e.g. {POD_RUNTIME})')
    return 'slice'
  if '-pod' in version:
    raise LaunchError(f'--pod_mode=per_host runs each host on its own and needs a runtime '
                      f'without -pod, not --runtime_version={version} (e.g. '
                      f'{SINGLE_HOST_RUNTIME})')
  return 'per_host'


def _tpu_environment(args, tpu, layout):
  """Environment variables the TensorFlow process needs on the TPU VM."""
  version = runtime_version(args, tpu)
  if layout == 'slice':
    # The -pod runtime's per-host servers own the chips; the client must not load libtpu.
    return {'TPU_LOAD_LIBRARY': '0'}
  env = {}
  if 'pjrt' in version:
    # TensorFlow's PJRT TPU runtime is loaded as a pluggable device.
    env.update(NEXT_PLUGGABLE_DEVICE_USE_C_API='true',
               TF_PLUGGABLE_DEVICE_LIBRARY_PATH=LIBTPU_PATH)
  if layout == 'per_host':
    env.update(TPU_PROCESS_BOUNDS='1,1,1', TPU_CHIPS_PER_PROCESS_BOUNDS=CHIPS_PER_HOST_BOUNDS,
               TPU_VISIBLE_CHIPS='0,1,2,3')
  return env


def _user_environment(args):
  env = {}
  if args.tfds_data_dir:
    env['TFDS_DATA_DIR'] = args.tfds_data_dir
  for item in args.env:
    key, sep, value = item.partition('=')
    if not sep or not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', key):
      raise LaunchError(f'--env {item!r} is not KEY=VALUE')
    env[key] = value
  return env


def _check_binary_flags(flags, binary):
  for flag in flags:
    if flag.split('=', 1)[0] in LAUNCHER_SET_FLAGS:
      raise LaunchError(f'{flag.split("=", 1)[0]} is set by the launcher: leave it out of the '
                        f'flags of lmc_tf.{binary}')


def _flag_value(flags, name):
  value = None
  for i, flag in enumerate(flags):
    if flag.startswith(name + '='):
      value = flag.split('=', 1)[1]
    elif flag == name and i + 1 < len(flags):
      value = flags[i + 1]
  return value


def remote_command(args, tpu, binary, flags, layout, split):
  """The shell command each worker runs for `python -m lmc_tf.BINARY FLAGS`."""
  env = {**_tpu_environment(args, tpu, layout), **_user_environment(args)}
  parts = [f'cd {REMOTE_DIR}']
  if env:
    parts.append('export ' + ' '.join(
        f'{k}="{v}"' if v == LIBTPU_PATH else f'{k}={shlex.quote(v)}' for k, v in env.items()))
  extra = []
  if binary in TPU_BINARIES:
    extra.append(f'--tpu={args.name}' if layout == 'slice' else '--tpu=local')
    extra.insert(0, '--strategy=tpu')
  if args.tfds_data_dir and binary in TPU_BINARIES and _flag_value(flags, '--tfds_data_dir') is None:
    extra.append('--tfds_data_dir=' + shlex.quote(args.tfds_data_dir))
  log_name = binary
  if split:
    # Each host reads its own worker number; the hosts split the sweep's jobs between them.
    parts.append(f'W=$(curl -sf -H "Metadata-Flavor: Google" {WORKER_NUMBER_URL})')
    extra += ['--worker_index="$W"', f'--num_workers={tpu.hosts}']
    log_name += '_worker$W'
  elif binary == 'sweep':
    extra += ['--worker_index=0', '--num_workers=1']
  python = (f'.venv/bin/python -m lmc_tf.{binary} ' +
            ' '.join([shlex.quote(f) for f in flags] + extra)).rstrip()
  if args.detach:
    log = f'{LOG_DIR}/{log_name}.log'
    parts += [f'mkdir -p {LOG_DIR}',
              f'(nohup {python} > {log} 2>&1 < /dev/null &)',
              f'echo "started lmc_tf.{binary} on $(hostname); log: {log}"']
  else:
    parts.append(python)
  return ' && '.join(parts)


def _check_slice_paths(args, flags):
  """On a pod slice every host reads the data and writes checkpoints (each variable on its
  own host), so paths must be ones every host sees: gs://."""
  paths = {'--model_dir': _flag_value(flags, '--model_dir'),
           '--data_dir': _flag_value(flags, '--data_dir'),
           '--tfds_data_dir': args.tfds_data_dir or _flag_value(flags, '--tfds_data_dir')}
  for name, path in paths.items():
    if path and not path.startswith('gs://'):
      raise LaunchError(f'{name}={path} is not on Cloud Storage: every host of a pod slice '
                        'reads and writes it, so give gs://BUCKET/...')


def binary_commands(args, tpu, binary, flags, sweep):
  _check_binary_flags(flags, binary)
  layout = _layout(args, tpu)
  if layout == 'slice':
    _check_slice_paths(args, flags)
  split = sweep and layout in ('local', 'per_host')
  if split and layout == 'per_host':
    model_dir = _flag_value(flags, '--model_dir') or ''
    if not model_dir.startswith('gs://'):
      raise LaunchError('a sweep split over hosts needs a --model_dir that every host sees: '
                        'give gs://BUCKET/...')
  command = remote_command(args, tpu, binary, flags, layout, split)
  # One worker runs a single binary; a split sweep runs on all of them.
  workers = 'all' if tpu.hosts == 1 or split else '0'
  return [_gcloud('ssh', args.name, args=args) + [f'--worker={workers}', f'--command={command}']]


def plan(args, flags):
  """The commands of a parsed command line, in order."""
  if args.command == 'versions':
    project = [f'--project={args.project}'] if args.project else []
    return [['gcloud', 'compute', 'tpus', 'tpu-vm', 'versions', 'list', f'--zone={args.zone}']
            + project]
  tpu = parse_accelerator_type(args.accelerator_type)
  if not re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', args.name or ''):
    raise LaunchError(f'bad TPU name {args.name!r}: lowercase letters, digits and hyphens, '
                      'starting with a letter')
  if args.command == 'create':
    if args.spot and args.preemptible:
      raise LaunchError('--spot and --preemptible exclude each other: pick one')
    _layout(args, tpu)  # the runtime must suit --pod_mode
    return create_commands(args, tpu)
  if args.command == 'install':
    return install_commands(args, tpu)
  if args.command == 'delete':
    return delete_commands(args, tpu)
  if args.command == 'run':
    binary = args.binary[len('lmc_tf.'):] if args.binary.startswith('lmc_tf.') else args.binary
    if binary not in BINARIES:
      raise LaunchError(f'unknown binary {args.binary!r}: choose one of {", ".join(BINARIES)}')
    return binary_commands(args, tpu, binary, flags, sweep=binary == 'sweep')
  return binary_commands(args, tpu, 'sweep', flags, sweep=True)


def _parser():
  common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  common.add_argument('--name', required=True, help='TPU VM name.')
  common.add_argument('--zone', required=True, help='e.g. us-central2-b (v4), europe-west4-a.')
  common.add_argument('--accelerator_type', required=True,
                      help='v2-8, v3-8, v4-8, v4-32, v5p-8, v5litepod-8, ...')
  common.add_argument('--project', help='Google Cloud project (default: gcloud config).')
  common.add_argument('--runtime_version', '--version', dest='runtime_version',
                      help=f'TPU runtime (software) version (default: {SINGLE_HOST_RUNTIME} for '
                      f'one host or --pod_mode=per_host, {POD_RUNTIME} for a pod slice); '
                      '`versions` lists those of a zone.')
  common.add_argument('--pod_mode', choices=('slice', 'per_host'), default='slice',
                      help='multi-host slices: one process over the whole slice (slice), or '
                      "each host its own share of a sweep (per_host, untested). Pass the same "
                      'value to create, run and sweep.')
  common.add_argument('--dry_run', action='store_true',
                      help='print the commands, one per line, and run nothing.')
  parser = argparse.ArgumentParser(
      prog='tpu/launch.py', allow_abbrev=False,
      description='Cloud TPU VMs for lmc_tf: create, install, run, sweep, delete.')
  sub = parser.add_subparsers(dest='command', required=True)
  create = sub.add_parser('create', parents=[common], allow_abbrev=False,
                          help='gcloud compute tpus tpu-vm create')
  create.add_argument('--spot', action='store_true', help='a Spot TPU VM (preemptible).')
  create.add_argument('--preemptible', action='store_true', help='a preemptible TPU VM.')
  install = sub.add_parser('install', parents=[common], allow_abbrev=False,
                           help='copy the project (a git ref) to every worker and install it.')
  install.add_argument('--ref', default='HEAD', help='git ref to copy (default HEAD: committed '
                       'work only).')
  install.add_argument('--tensorflow_tpu', help='a tensorflow-tpu version to pip-install on '
                       'workers whose runtime has no TensorFlow (untested).')
  for name, text in (('run', 'run one lmc_tf binary'),
                     ('sweep', "run lmc_tf.sweep, split over the slice's hosts")):
    command = sub.add_parser(name, parents=[common], allow_abbrev=False, help=text)
    if name == 'run':
      command.add_argument('--binary', required=True,
                           help=f'one of {", ".join(BINARIES)} (or lmc_tf.NAME).')
    command.add_argument('--tfds_data_dir',
                         help='exported as TFDS_DATA_DIR and passed as --tfds_data_dir.')
    command.add_argument('--env', action='append', default=[],
                         help='KEY=VALUE exported on the workers (repeatable).')
    command.add_argument('--detach', action='store_true',
                         help=f'run in the background under nohup, logging to {LOG_DIR}/.')
  sub.add_parser('delete', parents=[common], allow_abbrev=False,
                 help='gcloud compute tpus tpu-vm delete')
  versions = sub.add_parser('versions', allow_abbrev=False,
                            help='gcloud compute tpus tpu-vm versions list: the runtimes of a '
                            'zone')
  versions.add_argument('--zone', required=True)
  versions.add_argument('--project')
  versions.add_argument('--dry_run', action='store_true')
  return parser


def run_commands(commands):
  if shutil.which('gcloud') is None:
    raise LaunchError('gcloud not found: install the Google Cloud CLI '
                      '(https://cloud.google.com/sdk/docs/install), then `gcloud auth login`')
  for number, command in enumerate(commands, 1):
    print('+ ' + shlex.join(command), flush=True)
    status = subprocess.run(command, check=False).returncode
    if status:
      raise LaunchError(f'command {number}/{len(commands)} failed with exit status {status}: '
                        f'{shlex.join(command)[:300]}')


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  flags = []
  if '--' in argv:
    flags = argv[argv.index('--') + 1:]
    argv = argv[:argv.index('--')]
  args = _parser().parse_args(argv)
  try:
    if flags and args.command not in ('run', 'sweep'):
      raise LaunchError(f'{args.command} takes no binary flags after --')
    commands = plan(args, flags)
    if getattr(args, 'runtime_version', None) not in (None,) + DOCUMENTED_RUNTIMES:
      print(f'warning: {args.runtime_version} is not one of the runtimes this launcher was '
            f'written against ({", ".join(DOCUMENTED_RUNTIMES)})', file=sys.stderr)
    if args.dry_run:
      for command in commands:
        print(shlex.join(command))
      return 0
    run_commands(commands)
  except LaunchError as e:
    sys.stderr.write(f'error: {e}\n')
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())

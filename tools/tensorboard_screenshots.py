r"""Screenshots of TensorBoard's dashboards over a real analysis and a real sweep, from headless
Chromium, for docs/tensorboard/ (README, "TensorBoard"):

  .venv/bin/python tools/tensorboard_screenshots.py [--analysis=DIR] [--sweep=DIR] \
      [--out=docs/tensorboard] [--workdir=DIR]

Without --analysis it runs a short analysis (LeNet-300-100 on Fashion-MNIST, 2000 iterations on
6000 examples); without --sweep a short sweep (2 init seeds, k = 0 and 100, the unpruned network
and IMP level 2 with random pruning) and its report. It then starts TensorBoard on each
(`--logdir DIR` for the analysis, `--logdir SWEEP/tensorboard` for the sweep, as the README
says) and photographs the dashboards with Debian's `chromium` (apt-get install -y chromium).

Chromium runs with a fresh profile (TensorBoard's default settings) and without WebGL:
headless it has no GPU, and TensorBoard then draws its charts as SVG.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Uncompiled, as the screenshots in docs/tensorboard were made before XLA became LeNet's default.
SHORT = ["TrainingConfig.training_steps = '2000it'", 'DatasetConfig.train_subset = 6000',
         'DatasetConfig.test_eval_examples = 2000', 'DatasetConfig.train_eval_examples = 2000',
         'RunOptions.jit_compile = False']
SWEEP = ["TrainingConfig.training_steps = '600it'", 'SweepConfig.init_seeds = (0, 1)',
         "SweepConfig.rewind_points = ('0it', '100it')", 'SweepConfig.levels = (0, 2)',
         "SweepConfig.baselines = ('random_pruning',)", 'InterpolationConfig.num_alphas = 15',
         'InterpolationConfig.throughout_training = False']

# (file, logdir: 'analysis' or 'sweep', page, window size). Settings from the URL:
# `smoothing=0` (Time Series) and `_smoothingWeight=0` (the other scalar dashboards) set the
# smoothing slider to 0; `tagFilter` and `regexInput` filter the tags and runs (a sweep has
# more than the 40 runs the older dashboards select by default). "Ignore outliers in chart
# scaling" stays on, as TensorBoard keeps it in the browser's storage, not in the URL.
SHOTS = [
    ('analysis_time_series.png', 'analysis',
     '/?smoothing=0&tagFilter=%5E(instability%7Cinterpolation)%2F#timeseries', '1400,1500'),
    ('analysis_time_series_default.png', 'analysis', '/#timeseries', '1400,1000'),
    ('analysis_custom_scalars.png', 'analysis',
     '/#custom_scalars&_smoothingWeight=0', '1400,2600'),
    ('analysis_text.png', 'analysis', '/#text&tagFilter=%5E(summary%7Cinterpolation)%2F',
     '1400,1700'),
    ('sweep_custom_scalars.png', 'sweep',
     '/#custom_scalars&_smoothingWeight=0&regexInput=%5Eagainst_',
     '1400,1500'),
    ('sweep_hparams.png', 'sweep', '/#hparams', '1600,900'),
    ('sweep_time_series.png', 'sweep', '/?smoothing=0&tagFilter=%5Eagainst_#timeseries',
     '1400,2000'),
]


def run(*args):
  print('+', ' '.join(args), flush=True)
  subprocess.run([sys.executable, *args], cwd=REPO, check=True)


def binary(module, model_dir, bindings, *flags):
  run('-m', module, '--gin_file=lenet_fashion_mnist.gin', f'--model_dir={model_dir}',
      *[f'--gin_bindings={b}' for b in bindings], *flags)


class TensorBoard:
  """`tensorboard --logdir` on loopback, on a free port, stopped on exit."""

  def __init__(self, logdir):
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'tensorboard.main', f'--logdir={logdir}', '--host=127.0.0.1',
         '--port=0'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in self.process.stdout:
      found = re.search(r'(http://127\.0\.0\.1:\d+)/', line)
      if found:
        self.url = found.group(1)
        break
    else:
      raise RuntimeError('TensorBoard did not start')
    for _ in range(120):  # its first load of the logdir
      with urllib.request.urlopen(self.url + '/data/runs') as response:
        if response.read() != b'[]':
          break
      time.sleep(1)
    time.sleep(10)  # the remaining runs

  def __enter__(self):
    return self

  def __exit__(self, *_):
    self.process.terminate()
    self.process.wait(timeout=30)


def screenshot(chromium, url, path, size, profile):
  subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-webgl', '--hide-scrollbars',
                  f'--user-data-dir={profile}', f'--window-size={size}',
                  '--virtual-time-budget=30000', '--run-all-compositor-stages-before-draw',
                  f'--screenshot={path}', url], check=True, capture_output=True, timeout=300)
  print('wrote', path, flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--analysis', help='a finished analysis (default: run a short one)')
  parser.add_argument('--sweep', help='a finished sweep with its report (default: run one)')
  parser.add_argument('--out', default=os.path.join(REPO, 'docs', 'tensorboard'))
  parser.add_argument('--workdir', help='where the short runs go (default: a temporary one)')
  parser.add_argument('--chromium', default='chromium')
  args = parser.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix='tensorboard_screenshots_')
  analysis = args.analysis or os.path.join(workdir, 'analysis')
  sweep = args.sweep or os.path.join(workdir, 'sweep')
  if not args.analysis:
    binary('lmc_tf.instability', analysis, SHORT, '--threads=1')
  if not args.sweep:
    binary('lmc_tf.sweep', sweep, SHORT + SWEEP, '--threads=1')
    run('-m', 'lmc_tf.report', f'--model_dir={sweep}')
  os.makedirs(args.out, exist_ok=True)
  logdirs = {'analysis': analysis, 'sweep': os.path.join(sweep, 'tensorboard')}
  for name, logdir in logdirs.items():
    with TensorBoard(logdir) as tensorboard:
      for file, which, page, size in SHOTS:
        if which == name:
          with tempfile.TemporaryDirectory() as profile:
            screenshot(args.chromium, tensorboard.url + page, os.path.join(args.out, file),
                       size, profile)


if __name__ == '__main__':
  main()

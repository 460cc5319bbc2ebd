r"""lmc_tf's real training path against a plain PyTorch loop, side by side.

  .venv/bin/python benchmarks/vs_pytorch.py [--rounds=3] [--models=lenet,resnet20]

The same model, batch, optimizer and number of training examples on both sides:
LeNet-300-100 on Fashion-MNIST (batch 60, Adam 1.2e-3, the 60K training images) and
ResNet-20 on CIFAR-10-shaped synthetic data (batch 128, SGD 0.1 momentum 0.9, weight
decay 1e-4, 50K images as CIFAR-10 has; CIFAR-10 is not available offline). Each is timed
over whole epochs of its real size (LeNet 4 epochs of 1000 steps, ResNet-20 one of 390), so
lmc_tf's per-epoch evaluation and checkpoint weigh what they weigh in a real run.

- lmc_tf: the `Run` that `python -m lmc_tf.train` builds (masked layers, the seeded
  input pipeline with CIFAR's pad-crop-flip, the compiled multi-step loop), trained by
  `Run.train` with the gin file's logging, per-epoch evaluation and checkpoint cadence.
  Variants: float32, uncompiled (ResNet-20's default); XLA (`RunOptions.jit_compile =
  True`, LeNet's default); bfloat16 mixed precision, uncompiled
  (`TrainingConfig.precision = 'mixed_bfloat16'`).
- PyTorch: OpenLTH's network (tests/reference/torch_models.py) trained by a plain loop
  over in-memory tensors (a new permutation each epoch, no augmentation, no evaluation,
  no checkpoints): float32, and bfloat16 under `torch.autocast`.

Each measurement is a fresh process (its peak resident memory is reported). Steps/s is
the steady rate: the first chunk of steps (TensorFlow's tracing and compilation, PyTorch's
first allocations) is timed apart and left out; `first` gives that chunk's seconds. Rounds
interleave the variants; the table has medians over rounds and, per variant, the median
of its per-round ratio to the PyTorch float32 loop of the same round. The CPU's matmul peak
(float32 2048x2048 products in PyTorch, all threads) is measured in every round, and each
variant's achieved FLOP rate (6 x weights x batch per step for LeNet; the counted
convolution and dense FLOPs x 3 for ResNet-20) is given as a fraction of it.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'tests', 'reference'))

MODELS = {
    # name: (gin files, extra bindings, steps timed, batch)
    'lenet': (['lenet_fashion_mnist.gin'], [], 4000, 60),
    'resnet20': (['resnet20_cifar10.gin'], ['DatasetConfig.synthetic = True',
                                           'DatasetConfig.train_subset = 50000'], 390, 128),
}
LMC_TF_VARIANTS = ('lmc_tf float32', 'lmc_tf xla', 'lmc_tf bfloat16')
TORCH_VARIANTS = ('torch float32', 'torch bfloat16')
WARMUP = {'lenet': 100, 'resnet20': 10}  # the first chunk: compiled, then timed apart
# Forward multiply-adds per example of ResNet-20 on 32x32 images: the first conv, three
# stages of six 3x3 convs (16, 32, 64 filters at 32, 16, 8 pixels), two 1x1 shortcuts,
# the dense layer.
RESNET20_MACS = (32 * 32 * 16 * 27 + 6 * 32 * 32 * 16 * 144 +
                 16 * 16 * 32 * (144 + 5 * 288 + 16) + 8 * 8 * 64 * (288 + 5 * 576 + 32) + 640)


def flops_per_step(model):
  batch = MODELS[model][3]
  if model == 'lenet':
    weights = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    return 6 * weights * batch  # forward 2, backward 4 FLOPs per weight and example
  return 3 * 2 * RESNET20_MACS * batch


def peak_memory_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lmc_tf_child(model, variant):
  import lmc_tf  # pylint: disable=unused-import,g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lmc_tf import cli  # pylint: disable=g-import-not-at-top
  from lmc_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from lmc_tf.training import trainer  # pylint: disable=g-import-not-at-top
  gin_files, bindings, steps, _ = MODELS[model]
  bindings = bindings + [f"TrainingConfig.training_steps = '{steps + WARMUP[model]}it'",
                         f"RunOptions.log_every = '{WARMUP[model]}it'"]
  # Each variant sets XLA itself; by default LeNet is compiled, ResNet-20 not (trainer.compiles).
  bindings.append(f'RunOptions.jit_compile = {variant == "lmc_tf xla"}')
  if variant == 'lmc_tf bfloat16':
    bindings.append("TrainingConfig.precision = 'mixed_bfloat16'")
  hparams, options = cli.parse_gin(gin_files, bindings)
  data = data_lib.load(hparams.dataset)
  with tempfile.TemporaryDirectory() as model_dir:
    trainer.set_determinism(options)
    run = trainer.Run(hparams, options, model_dir, data)
    run.restore_or_initialize()
    times = []
    name = 'gathered_train_loop' if run.gathers_batches else 'train_loop'
    train_loop = getattr(run.steps, name)

    def timed_loop(*args):
      result = train_loop(*args)
      float(run.steps.train_loss.result())  # waits for the chunk's last step
      times.append((run.iteration, time.perf_counter()))
      return result

    setattr(run.steps, name, timed_loop)
    began = time.perf_counter()
    run.train()
  (first_iteration, first_end), (last_iteration, end) = times[0], times[-1]
  assert first_iteration == WARMUP[model] and last_iteration == steps + WARMUP[model]
  return {'it_per_s': (last_iteration - first_iteration) / (end - first_end),
          'first_s': first_end - began, 'peak_mb': peak_memory_mb(),
          'device': tf.config.list_logical_devices()[0].device_type}


def torch_child(model, variant):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch_models  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  _, _, steps, batch = MODELS[model]
  if model == 'lenet':
    from lmc_tf.data import local_files  # pylint: disable=g-import-not-at-top
    images, labels = local_files.load_idx_directory('/usr/share/datasets/fashion-mnist')['train']
    images = (images.astype(np.float32) / 255.0 - 0.2860) / 0.3530
    images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    net = torch_models.LeNet([300, 100], 10, 784)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.0012, eps=1e-8)
  else:
    images = torch.randn(50000, 3, 32, 32)
    labels = np.random.default_rng(0).integers(0, 10, 50000)
    net = torch_models.CifarResNet(20, 16, 10)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  labels = torch.from_numpy(np.asarray(labels, np.int64))
  net.train()
  per_epoch = len(images) // batch
  order = torch.randperm(len(images))

  def step(t):
    nonlocal order
    if t % per_epoch == 0:
      order = torch.randperm(len(images))
    index = order[(t % per_epoch) * batch:(t % per_epoch + 1) * batch]
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=variant == 'torch bfloat16'):
      loss = torch.nn.functional.cross_entropy(net(images[index]), labels[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  began = time.perf_counter()
  for t in range(WARMUP[model]):
    step(t)
  first_end = time.perf_counter()
  for t in range(WARMUP[model], WARMUP[model] + steps):
    loss = step(t)
  float(loss)
  end = time.perf_counter()
  return {'it_per_s': steps / (end - first_end), 'first_s': first_end - began,
          'peak_mb': peak_memory_mb(), 'threads': torch.get_num_threads()}


def matmul_peak_child():
  """float32 GFLOP/s of 2048x2048 matrix products, best of 5 (PyTorch, all threads)."""
  import torch  # pylint: disable=g-import-not-at-top
  a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
  a @ b
  best = 0.0
  for _ in range(5):
    began = time.perf_counter()
    for _ in range(4):
      a @ b
    best = max(best, 4 * 2 * 2048 ** 3 / (time.perf_counter() - began) / 1e9)
  return {'gflops': best}


def measure(*args):
  result = subprocess.run([sys.executable, __file__, '--child', *args], capture_output=True,
                          text=True, cwd=REPO, check=False)
  if result.returncode:
    raise SystemExit(f'{" ".join(args)} failed:\n{result.stderr[-3000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_model():
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
    return next(line.split(':', 1)[1].strip() for line in out.splitlines()
                if line.startswith('Model name'))
  except (OSError, subprocess.CalledProcessError, StopIteration):
    return 'unknown'


def main(rounds, models):
  variants = LMC_TF_VARIANTS + TORCH_VARIANTS
  results = {(m, v): [] for m in models for v in variants}
  peaks = []
  for _ in range(rounds):
    peaks.append(measure('peak')['gflops'])
    for key in results:
      results[key].append(measure(*key))
  peak = statistics.median(peaks)
  print(f'CPU: {cpu_model()}, {os.cpu_count()} cores; {rounds} rounds; float32 matmul peak '
        f'{peak:.0f} GFLOP/s (median; rounds: {", ".join(f"{p:.0f}" for p in peaks)})')
  print(f'{"model":9s} {"variant":16s} {"steps/s":>9s} {"x torch fp32":>13s} '
        f'{"of peak":>8s} {"first s":>8s} {"peak MB":>8s}  steps/s per round')
  for model in models:
    baseline = [r['it_per_s'] for r in results[(model, 'torch float32')]]
    for variant in variants:
      rates = [r['it_per_s'] for r in results[(model, variant)]]
      ratio = statistics.median(r / b for r, b in zip(rates, baseline))
      rate = statistics.median(rates)
      share = rate * flops_per_step(model) / (peak * 1e9)
      first = statistics.median(r['first_s'] for r in results[(model, variant)])
      memory = statistics.median(r['peak_mb'] for r in results[(model, variant)])
      print(f'{model:9s} {variant:16s} {rate:9.1f} {ratio:13.2f} {share:8.1%} {first:8.2f} '
            f'{memory:8.0f}  {" ".join(f"{r:.1f}" for r in rates)}')


if __name__ == '__main__':
  if len(sys.argv) >= 3 and sys.argv[1] == '--child':
    if sys.argv[2] == 'peak':
      print(json.dumps(matmul_peak_child()))
    elif sys.argv[3].startswith('lmc_tf'):
      print(json.dumps(lmc_tf_child(sys.argv[2], sys.argv[3])))
    else:
      print(json.dumps(torch_child(sys.argv[2], sys.argv[3])))
  else:
    rounds, chosen = 3, list(MODELS)
    for arg in sys.argv[1:]:
      if arg.startswith('--rounds='):
        rounds = int(arg.split('=', 1)[1])
      elif arg.startswith('--models='):
        chosen = arg.split('=', 1)[1].split(',')
        unknown = sorted(set(chosen) - set(MODELS))
        if unknown:
          sys.exit(f'error: unknown model {unknown[0]}: choose from {",".join(MODELS)}')
      else:
        sys.exit(f'error: unknown argument {arg}: the flags are --rounds=N and '
                 '--models=lenet,resnet20')
    main(rounds, chosen)

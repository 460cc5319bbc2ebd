"""PyTorch reference networks, to check that lmc_tf's Keras models compute the same function.

Written from the papers and from OpenLTH's architecture descriptions, with the
module names of OpenLTH's models, so that their state_dict keys are OpenLTH's:

- LeNet(hidden): OpenLTH's mnist_lenet_300_100 (`fc_layers.i`, `fc`): Linear +
  ReLU layers on the flattened (C, H, W) image, then a Linear output layer.
- CifarResNet(depth, width): OpenLTH's cifar_resnet_<depth>[_<width>]: 3x3 conv
  (padding 1, no bias) + BN + ReLU, three stages of (depth - 2) / 6 basic
  blocks of width, 2 width, 4 width filters, stride 2 on the first block of
  stages 2 and 3, a 1x1 stride-2 conv + BN shortcut where the shape changes,
  global average pooling, a Linear layer (`conv`, `bn`, `blocks.i`, `fc`).
- CifarVGG(depth): OpenLTH's cifar_vgg_<depth>: 3x3 conv (padding 1, *with* a
  bias) + BN + ReLU per plan entry, 2x2 max pools at 'M', then a 2x2 average
  pool, flatten, Linear(512, classes) (`layers.i.conv`, `layers.i.bn`, `fc`).

The ImageNet networks are torchvision's own (`resnet50`, `inception_v3`), loaded
by `torchvision_models()`.
"""
import functools
import importlib
import importlib.util
import sys
import types

import torch
from torch import nn
import torch.nn.functional as F


class LeNet(nn.Module):
  """Fully connected: 'lenet_300_100' is LeNet([300, 100])."""

  def __init__(self, hidden, num_classes=10, num_inputs=784):
    super().__init__()
    sizes = [num_inputs] + list(hidden)
    self.fc_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
    self.fc = nn.Linear(sizes[-1], num_classes)

  def forward(self, x):
    x = torch.flatten(x, 1)  # (N, C, H, W) -> C-major, as OpenLTH's x.view(N, -1)
    for layer in self.fc_layers:
      x = F.relu(layer(x))
    return self.fc(x)


class _BasicBlock(nn.Module):

  def __init__(self, f_in, f_out, downsample):
    super().__init__()
    stride = 2 if downsample else 1
    self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(f_out)
    self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(f_out)
    if downsample or f_in != f_out:
      self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=2, bias=False),
                                    nn.BatchNorm2d(f_out))
    else:
      self.shortcut = nn.Sequential()

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
  """He et al.'s CIFAR ResNet of depth 6n+2: 'cifar_resnet_20' is CifarResNet(20, 16)."""

  def __init__(self, depth, width=16, num_classes=10):
    super().__init__()
    if (depth - 2) % 6:
      raise ValueError(f'depth {depth} is not 6n+2')
    n = (depth - 2) // 6
    self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
    self.bn = nn.BatchNorm2d(width)
    blocks, f_in = [], width
    for stage in range(3):
      f_out = width * 2**stage
      for block in range(n):
        blocks.append(_BasicBlock(f_in, f_out, downsample=stage > 0 and block == 0))
        f_in = f_out
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(f_in, num_classes)

  def forward(self, x):
    x = F.relu(self.bn(self.conv(x)))
    x = self.blocks(x)
    x = x.mean(dim=(2, 3))  # global average pooling
    return self.fc(x)


# OpenLTH's plans, written out here rather than imported from lmc_tf: a reference that
# shared lmc_tf's definitions could not catch a mistake in them.
VGG_PLANS = {
    11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512],
    13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512],
    16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512],
    19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512],
}


class _ConvModule(nn.Module):

  def __init__(self, f_in, f_out):
    super().__init__()
    self.conv = nn.Conv2d(f_in, f_out, 3, padding=1)  # OpenLTH keeps the conv bias
    self.bn = nn.BatchNorm2d(f_out)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class CifarVGG(nn.Module):
  """VGG with BatchNorm for 32x32 images: 'cifar_vgg_16' is CifarVGG(16)."""

  def __init__(self, depth, num_classes=10):
    super().__init__()
    modules, f_in = [], 3
    for entry in VGG_PLANS[depth]:
      if entry == 'M':
        modules.append(nn.MaxPool2d(2, stride=2))
      else:
        modules.append(_ConvModule(f_in, entry))
        f_in = entry
    self.layers = nn.Sequential(*modules)
    self.fc = nn.Linear(512, num_classes)

  def forward(self, x):
    x = F.avg_pool2d(self.layers(x), 2)
    return self.fc(torch.flatten(x, 1))


@functools.lru_cache(maxsize=None)
def torchvision_models():
  """torchvision's model modules: (torchvision.models.resnet, torchvision.models.inception).

  PyPI's torchvision wheels are built against PyPI's CUDA torch: beside the CPU
  torch of requirements-reference.txt, `import torchvision` fails while
  registering its C++ operators ('operator torchvision::nms does not exist').
  The model definitions are pure Python and need none of those operators, so
  then they are imported from torchvision's files with the package's
  __init__.py (the operator registration) left out.
  """
  try:
    import torchvision.models.inception  # pylint: disable=g-import-not-at-top
    import torchvision.models.resnet  # pylint: disable=g-import-not-at-top
    return torchvision.models.resnet, torchvision.models.inception
  except (ImportError, RuntimeError):
    pass
  for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
    del sys.modules[name]
  spec = importlib.util.find_spec('torchvision')
  if spec is None:
    raise ImportError('torchvision is not installed: pip install --no-deps -r '
                      'requirements-reference.txt')
  root = spec.submodule_search_locations[0]
  for name, path in (('torchvision', root), ('torchvision.models', root + '/models')):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
  return (importlib.import_module('torchvision.models.resnet'),
          importlib.import_module('torchvision.models.inception'))


def reference_network(name, num_classes, num_inputs=784):
  """The PyTorch reference network of an lmc_tf model name, with torch's initial weights.
  torchvision's Inception3 keeps its auxiliary head (lmc_tf's inception_v3 has one)."""
  if name == 'lenet_300_100':
    return LeNet([300, 100], num_classes, num_inputs)
  if name.startswith('cifar_resnet_'):
    return CifarResNet(int(name.split('_')[2]), 16, num_classes)
  if name.startswith('cifar_vgg_'):
    return CifarVGG(int(name.split('_')[2]), num_classes)
  resnet, inception = torchvision_models()
  if name == 'resnet_50':
    return resnet.resnet50(weights=None, num_classes=num_classes)
  if name == 'inception_v3':
    return inception.inception_v3(weights=None, num_classes=num_classes, aux_logits=True,
                                  init_weights=False)
  raise ValueError(f'no PyTorch reference for {name!r}')

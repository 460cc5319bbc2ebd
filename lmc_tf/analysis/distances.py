"""Appendix G's comparison functions, on numpy arrays.

Weight distances are taken over the prunable kernels (convolution and dense),
multiplied by the mask for sparse networks, flattened into one vector.
"""
import numpy as np


def kernel_vector(weights, masks):
  """The masked prunable kernels of `weights`, in sorted path order, as one vector."""
  return np.concatenate([(np.asarray(weights[p], np.float64) * masks[p]).ravel()
                         for p in sorted(masks)])


def l2_distance(a, b):
  return float(np.linalg.norm(a - b))


def cosine_distance(a, b):
  return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def classification_differences(predictions_a, predictions_b):
  """How many examples the two networks classify differently."""
  return int(np.sum(np.asarray(predictions_a) != np.asarray(predictions_b)))


def loss_l2_distance(losses_a, losses_b):
  """L2 distance between the vectors of per-example cross-entropy losses."""
  return float(np.linalg.norm(np.asarray(losses_a, np.float64) - np.asarray(losses_b, np.float64)))

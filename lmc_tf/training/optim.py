"""Optimizers and learning-rate schedules, with every point in time resolved to iterations."""
import tensorflow as tf

from lmc_tf import steps
from lmc_tf.errors import UserError


class LearningRate(tf.keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0, then constant, step drops, or linear decay to a final rate."""

  def __init__(self, base_lr, kind, warmup, milestones, gamma, total, final_lr):
    super().__init__()
    if kind not in ('constant', 'step', 'linear'):
      raise UserError(f'unknown lr_schedule {kind!r}: choose constant, step or linear')
    self.base_lr, self.kind, self.warmup = float(base_lr), kind, int(warmup)
    self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)
    self.total, self.final_lr = int(total), float(final_lr)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    lr = tf.constant(self.base_lr)
    if self.kind == 'step':
      drops = tf.add_n([tf.cast(step >= m, tf.float32) for m in self.milestones] + [0.0])
      lr = lr * tf.pow(self.gamma, drops)
    elif self.kind == 'linear':
      progress = tf.minimum(step / max(self.total, 1), 1.0)
      lr = self.base_lr + (self.final_lr - self.base_lr) * progress
    if self.warmup > 0:
      lr = lr * tf.minimum(1.0, step / self.warmup)
    return lr

  def get_config(self):
    return dict(base_lr=self.base_lr, kind=self.kind, warmup=self.warmup,
                milestones=self.milestones, gamma=self.gamma, total=self.total,
                final_lr=self.final_lr)


def make_schedule(training, iterations_per_epoch):
  total = steps.to_iterations(training.training_steps, iterations_per_epoch)
  return LearningRate(training.lr, training.lr_schedule,
                      steps.to_iterations(training.warmup, iterations_per_epoch),
                      [steps.to_iterations(m, iterations_per_epoch) for m in training.milestones],
                      training.gamma, total, training.final_lr)


def make_optimizer(training, schedule):
  if training.optimizer == 'sgd':
    return tf.keras.optimizers.SGD(schedule, momentum=training.momentum)
  if training.optimizer == 'adam':
    return tf.keras.optimizers.Adam(schedule)
  raise UserError(f'unknown optimizer {training.optimizer!r}: choose sgd or adam')

r"""Trains one network from gin configs.

  python -m lmc_tf.train --gin_file=lenet_fashion_mnist.gin --model_dir=runs/lenet

Running the same command again resumes an interrupted run, or does nothing for
a finished one. See lmc_tf/training/trainer.py for the run directory layout.
"""
import lmc_tf  # pylint: disable=unused-import  (sets TF_USE_LEGACY_KERAS first)

from absl import app
from absl import logging

from lmc_tf import cli
from lmc_tf.training import trainer

FLAGS = cli.FLAGS


def main(argv):
  hparams, options = cli.setup(argv, 'name the directory for this run')
  data, strategy = cli.data_and_strategy(hparams)
  metrics = trainer.train(hparams, options, FLAGS.model_dir, data, strategy)
  logging.info('Final test error %.4f, train error %.4f', metrics['test_error'],
               metrics['train_error'])
  print(f'Finished: test accuracy {1 - metrics["test_error"]:.4f}. TensorBoard logs: '
        f'tensorboard --logdir {FLAGS.model_dir}')


if __name__ == '__main__':
  app.run(cli.run_main(main))

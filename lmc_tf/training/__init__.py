"""Training: optimizers and schedules, compiled steps under a tf.distribute strategy, the run loop."""

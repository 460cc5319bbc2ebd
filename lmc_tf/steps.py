"""Points in training written as iterations ("500it"), epochs ("18ep") or both ("2ep100it")."""
import re

from lmc_tf.errors import UserError

_STEP = re.compile(r'^(?:(?P<ep>\d+)ep)?(?:(?P<it>\d+)it)?$')


def to_iterations(step, iterations_per_epoch):
  """Returns the iteration count of `step` (a string like '500it' or '18ep', or an int)."""
  if isinstance(step, bool):
    raise UserError(f'cannot read {step!r} as a step: write "500it" or "18ep"')
  if isinstance(step, int):
    if step < 0:
      raise UserError(f'step {step} is negative: steps count iterations from 0')
    return step
  text = str(step).strip().replace(' ', '')
  match = _STEP.match(text)
  if not text or not match:
    raise UserError(f'cannot read {step!r} as a step: write iterations as "500it", '
                    'epochs as "18ep", or both as "2ep100it"')
  epochs = int(match.group('ep') or 0)
  iterations = int(match.group('it') or 0)
  return epochs * iterations_per_epoch + iterations

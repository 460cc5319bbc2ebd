import pytest

from lmc_tf import steps
from lmc_tf.errors import UserError


@pytest.mark.parametrize('text,expected', [
    ('500it', 500), ('18ep', 1800), ('2ep50it', 250), (' 3ep ', 300), (7, 7), ('0it', 0)])
def test_to_iterations(text, expected):
  assert steps.to_iterations(text, 100) == expected


@pytest.mark.parametrize('text', ['500', 'ep', '1.5ep', '10 iterations', '', '-3it', True])
def test_unparsable_steps_are_user_errors(text):
  with pytest.raises(UserError, match='500it'):
    steps.to_iterations(text, 100)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))

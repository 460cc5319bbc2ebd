"""The one exception type for bad input: the binaries print its message on one line and exit 1."""


class UserError(Exception):
  """A problem with what the user asked for; the message names it and the fix."""

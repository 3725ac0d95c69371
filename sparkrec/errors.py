"""What a user can fix, told apart from bugs.

``UserError`` is a bad argument, input or state a user can act on (a date that is not one, a table
without that version, a split with nothing held out). The command line prints it as one
``sparkrec: error:`` line with exit code 2; anything else that escapes is a bug: exit code 1 with its
traceback. The config, landing, table and model errors of the other modules are user errors too
(``cli.USER_ERRORS`` lists them), as are Spark's analysis and arithmetic errors, Delta's write
conflicts and MLflow's errors.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix; printed as one line, exit code 2."""

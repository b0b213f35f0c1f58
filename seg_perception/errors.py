"""The package's exceptions: one root, so a caller (and the CLI) can tell a problem the user
can fix from a bug.

Every error the package raises on purpose derives from ``SegPerceptionError``. Most also keep
the built-in base that callers already catch (``ValueError``, ``KeyError``, ``RuntimeError``,
``FileNotFoundError``), so ``except ValueError`` around a bad parameter keeps working.
``seg-perception`` prints a ``SegPerceptionError`` or an ``OSError`` as one line; any other
exception is a bug and keeps its traceback.
"""


class SegPerceptionError(Exception):
    """Root of the errors this package raises on purpose: a problem the user can fix."""


class InvalidValueError(SegPerceptionError, ValueError):
    """A value the user chose (argument, parameter, config entry) or a file holds is unusable."""


class UnknownNameError(SegPerceptionError, KeyError):
    """A name (architecture, label space, class) that is not one of the known ones."""

    def __str__(self) -> str:
        # KeyError's str() quotes its argument; the message is a sentence, not a key.
        return str(self.args[0]) if self.args else ''


class CommandError(SegPerceptionError):
    """A command-line run cannot go on; printed as one line, exit status 2."""

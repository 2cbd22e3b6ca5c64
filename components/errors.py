"""Errors raised by the tfflows components for bad user input."""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["DataError", "RegistrationError", "TrainingDivergedError", "reraise_data_error"]


class DataError(ValueError):
    """Bad input data: the message is one line naming the file, the place and the fix.

    The message always reads ``<file>: <where> (row/column/field): <what is wrong>; <fix>``
    on a single line, so that it can be shown as is in a CLI or a pipeline log.

    Args:
      source: the file, folder or bundled dataset name the problem was found in.
      where: the row, column, field or split concerned (may be empty).
      problem: what is wrong.
      fix: what the user should do about it.

    Attributes:
      source, where, problem, fix: the parts above.
    """

    def __init__(self, source: Optional[str], where: str, problem: str, fix: str) -> None:
        self.source = str(source)
        self.where = str(where)
        self.problem = str(problem)
        self.fix = str(fix)
        parts = [self.source]
        if self.where:
            parts.append(self.where)
        parts.append(f"{self.problem}; fix: {self.fix}")
        message = ": ".join(parts)
        super().__init__(" ".join(message.split()))

    def __reduce__(self):
        # Keeps the exception picklable across Beam worker boundaries.
        return (DataError, (self.source, self.where, self.problem, self.fix))


class TrainingDivergedError(RuntimeError):
    """Training produced no finite model (every epoch diverged); nothing was saved.

    Raised by `components.train.finish`; it lives here, free of TensorFlow, so that the CLI can
    name it at its top (exit status 3)."""


class RegistrationError(RuntimeError):
    """A push whose registry is on this machine was not registered (`register_push`'s ``required``).

    Raised by `components.push.registry`; it lives here, free of MLflow, for the CLI (exit status 2)."""


_DATA_ERROR_LINE = re.compile(r"DataError: (.+)")


def reraise_data_error(err: BaseException) -> None:
    """Raises the `DataError` behind a Beam failure, if any (Beam wraps worker exceptions)."""
    seen = set()
    cause: Optional[BaseException] = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, DataError):
            raise DataError(cause.source, cause.where, cause.problem, cause.fix) from None
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    match = _DATA_ERROR_LINE.search(str(err))
    if match:
        error = DataError("", "", "", "")
        error.args = (match.group(1).strip().split(" [while running")[0],)
        raise error from None

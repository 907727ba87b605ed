"""The package's exceptions.

Library code raises a :class:`FemursegError` subclass with an actionable, one-line message (what was wrong,
what to do).  The CLI prints it as ``femurseg: error: <message>`` and exits with :attr:`FemursegError.exit_code`.
Any other exception is a bug.
"""

from __future__ import annotations


class FemursegError(Exception):
    """Base class of every error femurseg reports to a user; exit code 2."""

    exit_code: int = 2


class InputError(FemursegError):
    """A user-supplied input (file, folder, option) is missing, malformed or unsupported; exit code 2."""


class ModelError(FemursegError):
    """A model bundle is missing, corrupt, or of an unsupported format version; exit code 2."""


class NoFemurFound(FemursegError):
    """The scan holds no proximal femur that the model can find; exit code 3.

    ``qc`` holds the quality-control values of the sides that were segmented and rejected (``{side: dict}``).
    """

    exit_code = 3

    def __init__(self, message: str, *, qc: dict | None = None) -> None:
        super().__init__(message)
        self.qc = dict(qc or {})

"""The exceptions a user can cause, and how bad samples are reported without flooding the log.

The command line turns `DataError` (a ValueError), `NonFiniteLossError` and the other user errors into
one line on stderr and exit code 2; no traceback. `BadSampleError` is one unusable sample: the data
readers catch it to skip the sample (or let it stop the run, with on_bad_sample="error").
"""

from __future__ import annotations

import logging

__all__ = ["MAX_BAD_SAMPLE_WARNINGS", "BadSampleError", "BadSampleWarnings", "DataError", "NonFiniteLossError"]

MAX_BAD_SAMPLE_WARNINGS = 10  # per process (each data-loader worker is one)


class DataError(ValueError):
    """Bad input found before training starts: the run stops with this one-line message."""


class BadSampleError(ValueError):
    """One sample that cannot be used; the message names the file, the row if known, and the reason."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class BadSampleWarnings:
    """Logs the first MAX_BAD_SAMPLE_WARNINGS bad samples, then counts the rest silently.

    A broken shard or a folder of damaged images must not flood the log; the count of skipped samples is
    reported elsewhere (the training metrics). Pickles with its count, so each data-loader worker limits
    its own warnings.
    """

    def __init__(self, log: logging.Logger, limit: int = MAX_BAD_SAMPLE_WARNINGS) -> None:
        self.log = log
        self.limit = limit
        self.count = 0

    def warn(self, message: str) -> None:
        self.count += 1
        if self.count <= self.limit:
            more = "; further bad samples are counted without a warning" if self.count == self.limit else ""
            self.log.warning("%s%s", message, more)

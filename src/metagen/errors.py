"""User-facing errors: each carries a one-line message saying what is wrong and what to do.

The CLI prints `metagen: error: <message>` and exits with status 2 for any of these; everything
else is a bug and keeps its traceback.
"""


class MetagenError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(MetagenError):
    """A config file or override has an unknown key or a bad value."""


class DataError(MetagenError):
    """A dataset, image or support set cannot be used."""


class CheckpointError(MetagenError):
    """A checkpoint is missing, corrupt, or was written by a different model."""


class TrainingDiverged(MetagenError):
    """The loss became NaN or infinite; the last good state was kept."""


def one_line(message: str) -> str:
    """Escape newlines and other control characters (they can come from user input quoted in a message)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)

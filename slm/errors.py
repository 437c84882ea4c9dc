"""The errors a user of the model can cause; each message names the bad value and the fix."""


class SLMError(Exception):
    """Base class: the CLI prints its message on one line and exits non-zero."""


class ConfigError(SLMError):
    """A preset, config file or option value that cannot describe a model or a run."""


class DataError(SLMError):
    """Training data that is missing, empty, not UTF-8 or too small to split."""


class ModelFolderError(SLMError):
    """A model folder that is missing files, truncated, corrupted or of another format."""

"""User-facing errors: the CLI prints their message as one line and exits with status 2."""


class AugkdError(Exception):
    """Bad input or an unusable environment, explained in one line that names the bad value."""


class ConfigError(AugkdError, ValueError):
    """A configuration value is invalid."""

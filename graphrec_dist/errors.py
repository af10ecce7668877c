"""Errors that are the user's to fix: the CLI prints them plainly and exits with code 2."""


class UserError(Exception):
    """Bad input (a missing file, a wrong column, a bad config key): message names what is wrong."""

    exit_code = 2


class ConfigError(UserError):
    """An unknown key, a wrong type or an invalid value in a config file or override."""


class DataError(UserError):
    """Raw data or a bundle that cannot be read as expected."""

"""The base of every error a user can fix from the command line (a bad value, a missing or bad
data file, an unusable tracking store, a bad params file): entry points report it as one line,
`error: <message>`, and exit non-zero. Each layer defines its own subclass (ConfigValueError,
DataError, TrackingError, ParamsError), so this module imports nothing."""


class UserError(Exception):
    """An error whose one-line message names what to fix (a key, a file, a store)."""

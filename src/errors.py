"""The errors a user can fix from the command line (a bad value, a missing or bad data file, an
unusable tracking store): entry points report them as one line and exit non-zero."""

from src.config import ConfigValueError
from src.data import DataError
from src.tracking import TrackingError

USER_ERRORS = (ConfigValueError, DataError, TrackingError)

"""Errors of data products, each with the HTTP status it maps to (``api/errors.py`` answers
them like every other ``CityBrainError``)."""

from __future__ import annotations

from marketplace.errors import CityBrainError, InvalidInputError, UnavailableError

__all__ = [
    "EngineBusyError",
    "InvalidDataError",
    "QueryMemoryError",
    "QueryTimeoutError",
    "UnsupportedFormatError",
]


class UnsupportedFormatError(CityBrainError):
    """415: the upload is in a format other than CSV, Parquet or JSON Lines."""

    status = 415
    code = "UnsupportedMediaType"


class InvalidDataError(InvalidInputError):
    """422: the file cannot be read, or its values do not fit the schema."""

    code = "InvalidData"


class QueryTimeoutError(UnavailableError):
    """503: the query ran past the time limit and was interrupted."""

    code = "QueryTimeout"


class QueryMemoryError(UnavailableError):
    """503: the query needed more memory than the engine may use."""

    code = "QueryOutOfMemory"


class EngineBusyError(UnavailableError):
    """503: every query slot of this process stayed busy for the whole time limit."""

    code = "EngineBusy"

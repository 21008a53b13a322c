"""Errors a driver raises, and the ones the SDK answers with on its behalf."""

from __future__ import annotations


class PluginError(Exception):
    """Report a failure to the Docker daemon.

    Raise it from any driver method; the SDK answers HTTP 500 with
    ``{"Err": message}`` and the daemon shows the message to the user, e.g.
    ``docker volume create`` prints ``VolumeDriver.Create: <message>``.
    The message should say what went wrong in the user's terms.
    """

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        # str(): the daemon only shows "Err" when it is a string.
        self.message = str(message)

    def __str__(self) -> str:
        return self.message


class BadRequest(PluginError):
    """The request body could not be decoded (malformed JSON, a wrong type, a
    missing field). Answered with HTTP 400; the message names the field."""

    status = 400

"""The builder's errors: one short hierarchy, turned into one line by the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class BundleError(Exception):
    """Base of every builder error; ``str()`` is one clear line for the user."""


class ProjectError(BundleError):
    """plugin.toml is missing or wrong."""


class ConfigError(BundleError):
    """config.json (or its template) is invalid; the message names the field(s)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class BuildError(BundleError):
    """Building the image or exporting the rootfs failed."""


class EngineError(BundleError):
    """The Docker daemon refused a request; the message carries its reason."""


def reason(exc: BaseException) -> str:
    """The daemon's own words for a refusal (docker-py's ``explanation``),
    else the exception's message."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc) or type(exc).__name__


@contextmanager
def engine_errors(what: str, error: type[BundleError] = EngineError) -> Iterator[None]:
    """The daemon's refusals (and a lost connection) while doing ``what``, as
    one ``error`` line: ``what: the daemon's reason``. The one place engine
    errors are translated."""
    import docker.errors  # type: ignore[import-untyped,unused-ignore]
    import requests.exceptions

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise error(f"{what}: {reason(exc)}") from None

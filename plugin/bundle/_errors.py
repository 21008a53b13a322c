"""The builder's errors: one short hierarchy, turned into one line by the CLI."""

from __future__ import annotations


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

"""The bundle builder: renders config.json, builds the rootfs and drives the
engine (``docker plugin create / set / enable / ...``).

Needs the ``bundle`` extra (docker, jinja2): ``pip install .[bundle]``. The
command line is ``python -m plugin.bundle``; the library never prints and
never exits, and raises ``BundleError`` subclasses with one-line messages.
"""

from ._config import ImageFacts, Problem, check_config, render_config, validate_config
from ._errors import BuildError, BundleError, ConfigError, EngineError, ProjectError
from ._project import Project, load_project, normalize_name

__all__ = [
    "BuildError",
    "BundleError",
    "ConfigError",
    "EngineError",
    "ImageFacts",
    "Problem",
    "Project",
    "ProjectError",
    "check_config",
    "load_project",
    "normalize_name",
    "render_config",
    "validate_config",
]

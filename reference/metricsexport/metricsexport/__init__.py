"""metricsexport: the Docker daemon's metrics on a TCP port."""

from .driver import MetricsExport

__all__ = ["MetricsExport"]

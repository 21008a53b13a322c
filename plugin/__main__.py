"""``python -m plugin [--socket NAME | --path PATH | --listen URL | --spec FILE] module:Class ...``

Imports each driver class, checks the per-host settings they declare (and
``LOG_LEVEL``), instantiates each with no arguments and serves them all on
one socket. This is the entrypoint the builder writes into config.json.
Outside Docker's plugin manager (a host service), ``--spec`` serves where a
spec file tells the daemon to dial (TLS for ``https://``, with
``--tls-cert``/``--tls-key``), and systemd socket activation (``LISTEN_FDS``)
serves the sockets systemd passes.

A problem at start (a bad setting, a driver that cannot be made) is one line
``plugin: cannot start: ...`` on stderr, which the daemon logs, and exit
status 1: the daemon then fails ``docker plugin enable`` (after its ~12 s of
dial attempts) and leaves the plugin disabled; it restarts a plugin that
exits at start once, not in a loop.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Iterable, Mapping

from ._driver import Driver
from ._listen import TLS, read_spec
from ._serve import configure_logging, serve
from .settings import Settings, check, choice


def load_driver_class(spec: str) -> type[Driver]:
    """``package.module:ClassName`` -> the class.

    ValueError with a one-line reason when the spec is malformed, names no
    module or attribute, or names something that is not a driver class. An
    error raised while the module itself is imported propagates unchanged.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"driver {spec!r} must be written module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module of the spec is the spec's fault; a missing
        # dependency of the driver's module is a real import error.
        if exc.name is None or not _is_prefix(exc.name, module_name):
            raise
        raise ValueError(f"driver {spec!r}: no module named {exc.name!r}") from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise ValueError(
            f"driver {spec!r}: module {module_name!r} has no attribute {attr!r}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise ValueError(
            f"driver {spec!r}: not a driver class (a subclass of VolumeDriver or another type)"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise ValueError(f"driver {spec!r}: abstract class, implement {missing}")
    return cls


class _KitSettings(Settings):
    """What the kit itself reads from the environment."""

    log_level = choice(["debug", "info", "warning", "error", "critical"], "info")


def check_settings(
    classes: Iterable[type[Driver]], environ: Mapping[str, str], log_level: str | None = None
) -> None:
    """SettingsError naming every bad per-host setting of the drivers
    ``classes``, and a bad ``LOG_LEVEL`` unless ``log_level`` (the command
    line's) overrides it or a driver declares ``LOG_LEVEL`` itself."""
    classes = list(classes)
    declared = [c.settings for c in classes if c.settings is not None]
    own = {e.name for c in classes for e in c.env} | {
        s.name for d in declared for s in d.declared()
    }
    if log_level is None and "LOG_LEVEL" not in own:
        declared.insert(0, _KitSettings)
    check(declared, environ)


def _is_prefix(package: str, module_name: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugin", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", help="socket file name in /run/docker/plugins")
    where.add_argument("--path", help="full socket path (legacy plugins, tests)")
    where.add_argument(
        "--listen", metavar="URL", help="unix:///PATH, tcp://HOST:PORT or https://HOST:PORT"
    )
    where.add_argument(
        "--spec",
        metavar="FILE",
        help="listen where this spec file (NAME.spec or NAME.json) tells the daemon to dial",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="https: the plugin's certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="https: its key")
    parser.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="https: accept only clients with a certificate signed by this CA",
    )
    parser.add_argument("--log-level", default=None, help="default: $LOG_LEVEL, else info")
    parser.add_argument("drivers", nargs="+", metavar="module:Class")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    # The daemon reports only "no such file or directory" for a plugin that
    # never listens: say why on stderr, which lands in the daemon's log.
    try:
        classes = [load_driver_class(spec) for spec in args.drivers]
        # Bad per-host settings stop the plugin here, in one line naming
        # each, before any driver is made (which may read them).
        check_settings(classes, os.environ, log_level=args.log_level)
        drivers = [cls() for cls in classes]
    except ValueError as exc:
        print(f"plugin: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"plugin: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        listen = args.listen
        if args.spec:
            listen = str(read_spec(args.spec))
        tls = None
        if args.tls_cert or args.tls_key or args.tls_client_ca:
            if not (args.tls_cert and args.tls_key):
                raise ValueError("--tls-cert and --tls-key go together")
            tls = TLS(args.tls_cert, args.tls_key, args.tls_client_ca)
        serve(
            *drivers,
            socket=args.socket,
            path=args.path,
            listen=listen,
            tls=tls,
            log_level=args.log_level,
        )
    except (OSError, ValueError) as exc:
        print(f"plugin: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m plugin [--socket NAME | --path PATH | --listen URL | --spec FILE] module:Class ...``

Imports each driver class, checks the per-host settings they declare (and
``LOG_LEVEL``), instantiates each with no arguments and serves them all on
one socket. This is the entrypoint the builder writes into config.json.
Outside Docker's plugin manager (a host service), ``--spec`` serves where a
spec file tells the daemon to dial (TLS for ``https://``, with
``--tls-cert``/``--tls-key``), and systemd socket activation (``LISTEN_FDS``)
serves the sockets systemd passes.

The socket is bound once the drivers are made, before the server's own
imports: connections made meanwhile wait in its backlog. Not earlier: the
daemon dials a plugin's socket from half a second after starting it and
enables it once it connects, so a plugin that listened and then failed to
load a driver would be enabled, then restarted on its exit, in a loop.

A problem at start (a bad setting, a driver that cannot be made) is one line
``plugin: cannot start: ...`` on stderr, which the daemon logs, and exit
status 1: the daemon then fails ``docker plugin enable`` (after its ~12 s
of dial attempts) and leaves the plugin disabled; it restarts a plugin that
exits at start once, not in a loop.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: see _arguments
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Mapping

    from ._driver import Driver
    from ._listen import TLS


def check_settings(
    classes: Iterable[type[Driver]], environ: Mapping[str, str], log_level: str | None = None
) -> None:
    """SettingsError naming every bad per-host setting of the drivers
    ``classes``, and a bad ``LOG_LEVEL`` unless ``log_level`` (the command
    line's) overrides it or a driver declares ``LOG_LEVEL`` itself."""
    from .settings import Settings, check, choice

    class _KitSettings(Settings):
        """What the kit itself reads from the environment."""

        log_level = choice(["debug", "info", "warning", "error", "critical"], "info")

    classes = list(classes)
    declared = [c.settings for c in classes if c.settings is not None]
    own = {e.name for c in classes for e in c.env} | {
        s.name for d in declared for s in d.declared()
    }
    if log_level is None and "LOG_LEVEL" not in own:
        declared.insert(0, _KitSettings)
    check(declared, environ)


def _parser() -> argparse.ArgumentParser:
    import argparse

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
    return parser


def _arguments(argv: list[str]) -> argparse.Namespace | None:
    """The arguments as ``_parser()`` reads them, for the plain forms the
    builder writes (``--socket NAME [--log-level L] module:Class...``);
    None for anything else (``--help``, ``--socket=NAME``, ``--listen``, a
    mistake), which goes to argparse. argparse loads shutil, gettext and
    locale: 0.8 MB of a plugin's memory and a few ms before it listens."""
    from types import SimpleNamespace

    options: dict[str, str | None] = {"socket": None, "path": None, "log_level": None}
    drivers: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("--socket", "--path", "--log-level"):
            key = arg[2:].replace("-", "_")
            value = next(args, None)
            if value is None or value.startswith("-") or options[key] is not None:
                return None
            options[key] = value
        elif arg.startswith("-") or arg == "":
            return None
        else:
            drivers.append(arg)
    if (options["socket"] is None) == (options["path"] is None) or not drivers:
        return None
    rest = dict.fromkeys(("listen", "spec", "tls_cert", "tls_key", "tls_client_ca"))
    return SimpleNamespace(**options, **rest, drivers=drivers)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _arguments(argv) or _parser().parse_args(argv)

    from ._defer import defer_unused

    # Before the drivers' imports, which import some of what it defers.
    defer_unused()
    from ._driver import load_driver_class
    from ._serve import configure_logging, serve

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
        listen, tls = _listen_options(args)
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


def _listen_options(args: argparse.Namespace) -> tuple[str | None, TLS | None]:
    """``--listen`` or ``--spec``, and the TLS options (a host service)."""
    if not (args.listen or args.spec or args.tls_cert or args.tls_key or args.tls_client_ca):
        return None, None
    from ._listen import TLS, read_spec

    listen = args.listen
    if args.spec:
        listen = str(read_spec(args.spec))
    tls = None
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        tls = TLS(args.tls_cert, args.tls_key, args.tls_client_ca)
    return listen, tls


if __name__ == "__main__":
    sys.exit(main())

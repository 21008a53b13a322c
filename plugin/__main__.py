"""``python -m plugin [--socket NAME | --path PATH] module:Class [...]``

Imports each driver class, instantiates it with no arguments and serves them
all on one socket. This is the entrypoint the builder writes into config.json.

The socket is bound first, with nothing but ``plugin._socket`` loaded, then
the drivers are imported and made, then the server: connections made in the
meantime wait in the socket's backlog. When a driver cannot be loaded the
socket is removed again and the process exits with one line on stderr: the
daemon dials a plugin's socket half a second after starting it, so a plugin
that fails at start-up still fails ``docker plugin enable``.
"""

from __future__ import annotations

import argparse
import socket
import sys

from ._socket import listening, socket_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugin", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="socket file name in /run/docker/plugins")
    where.add_argument("--path", help="full socket path (legacy plugins, tests)")
    parser.add_argument("--log-level", default=None, help="default: $LOG_LEVEL, else info")
    parser.add_argument("drivers", nargs="+", metavar="module:Class")
    args = parser.parse_args(argv)
    try:
        at = socket_path(args.socket, args.path)
        with listening(at) as sock:
            return _serve(args, sock, at)
    except (OSError, ValueError) as exc:
        print(f"plugin: cannot serve: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace, sock: socket.socket, where: str) -> int:
    from ._driver import load_driver_class
    from ._serve import StopOnSignal, configure_logging, log, serve_on

    configure_logging(args.log_level)
    with StopOnSignal() as stop:
        # The daemon reports only "no such file or directory" for a plugin
        # that never listens: say why on stderr, which lands in its log.
        try:
            drivers = [load_driver_class(spec)() for spec in args.drivers]
        except ValueError as exc:
            print(f"plugin: cannot start: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            import traceback

            traceback.print_exc()
            print(f"plugin: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        serve_on(drivers, sock, where, stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

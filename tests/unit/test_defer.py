"""Modules loaded on first use (plugin/_defer.py), each checked in a fresh
interpreter: not loaded by the server's imports, whole and real once used."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from email.utils import formatdate as real_formatdate
from pathlib import Path

import pytest

from plugin._defer import formatdate

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import sys
from plugin._defer import defer_unused
defer_unused()
import asyncio, logging
from plugin._serve import _uvicorn
_uvicorn()
import uvicorn.protocols.http.httptools_impl, uvicorn.server
"""


def run(code: str) -> str:
    # -S: no site-packages .pth files, which may import some of these first.
    out = subprocess.run(
        [sys.executable, "-S", "-c", PRELUDE + code],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_server_imports_load_none_of_them() -> None:
    out = run(
        "heavy = ['_ssl', 'logging.handlers', 'email._parseaddr', 'configparser', 'pathlib',\n"
        "         '_posixsubprocess', 'tokenize', 'textwrap', 'ipaddress', 'platform', 'random']\n"
        "print(sorted(m for m in heavy if m in sys.modules and\n"
        "      type(sys.modules[m]).__name__ != '_Deferred'))\n"
    )
    assert out == "[]\n"


def test_ssl_once_used_is_whole_and_asyncio_holds_the_real_classes() -> None:
    out = run(
        "import ssl, asyncio.sslproto as sp, asyncio.base_events as be\n"
        "ctx = ssl.create_default_context()\n"
        "again = (ssl.SSLWantReadError, ssl.SSLSyscallError)\n"
        "print(type(ssl).__name__, sp.SSLAgainErrors == again,\n"
        "      be.ssl is ssl, ssl.PROTOCOL_TLS_SERVER == 17, ssl.CERT_NONE == 0,\n"
        "      isinstance(ctx, ssl.SSLContext), ssl.SSLSocket.__module__)\n"
    )
    assert out == "module True True True True True ssl\n"


def test_the_stand_in_numbers_are_the_real_ones() -> None:
    import ssl

    assert (ssl.PROTOCOL_TLS_SERVER, ssl.CERT_NONE) == (17, 0)
    assert (subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL) == (-1, -2, -3)


def test_the_others_once_used() -> None:
    out = run(
        "import subprocess, logging.config, email.utils, pathlib, uvicorn.config as c\n"
        "print(subprocess.run(['true']).returncode, subprocess.PIPE)\n"
        "logging.config.dictConfig({'version': 1, 'incremental': True})\n"
        "print(email.utils.parseaddr('a <b@c>'), uvicorn.server.formatdate(0, usegmt=True))\n"
        "print(c.Path.cwd() == pathlib.Path.cwd(), c.Path('x').name, c.Path is pathlib.Path)\n"
        "print(type(sys.modules['configparser']).__name__, c.RawConfigParser.__module__)\n"
    )
    assert out.splitlines() == [
        "0 -1",
        "('a', 'b@c') Thu, 01 Jan 1970 00:00:00 GMT",
        "True x True",
        "_Deferred configparser",
    ]


def test_the_leaves_once_used() -> None:
    out = run(
        "import inspect, ipaddress, platform, random, textwrap, traceback\n"
        "print(ipaddress.ip_address('10.1.2.3') in ipaddress.ip_network('10.0.0.0/8'))\n"
        "print(platform.system(), random.Random(7).randrange(1000), textwrap.indent('x', '> '))\n"
        "import json\n"
        "try:\n"
        "    json.loads('x')\n"
        "except ValueError:\n"  # a traceback shows source lines (linecache, tokenize)
        "    lines = traceback.format_exc().splitlines()\n"
        "print(lines[-2].strip().split('(')[0], lines[-1])\n"
        "print(inspect.getsource(textwrap.dedent).splitlines()[0])\n"
        "print(sorted(type(sys.modules[m]).__name__ for m in ('tokenize', 'random')))\n"
    )
    assert out.splitlines() == [
        "True",
        f"{platform.system()} {random.Random(7).randrange(1000)} > x",
        "raise JSONDecodeError "
        "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
        "def dedent(text):",
        "['module', 'module']",
    ]


@pytest.mark.parametrize("usegmt", [True, False])
def test_formatdate_answers_as_email_utils_does(usegmt: bool) -> None:
    rng = random.Random(7)
    times = [0, 1.9999999, 86399.9999995, 951782400, -1.5, 4102444800.25]
    times += [rng.uniform(-1e9, 4e9) for _ in range(2000)]
    for t in times:
        assert formatdate(t, usegmt=usegmt) == real_formatdate(t, usegmt=usegmt), t
    assert formatdate(5.0, localtime=True) == real_formatdate(5.0, localtime=True)

"""Counts the reliability tests report (fuzz cases tried, faults injected,
concurrent operations run), printed at the end of every run, -q included.

Also makes every reference project (``reference/<name>/``, an author project
with its package ``<name>/``) importable, as its own tests do."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

#: The reference plugins: author projects, each importable as its users'
#: tests import it (``import localvol``).
ROOT = Path(__file__).resolve().parents[1]
REFERENCES = sorted(p.parent for p in ROOT.glob("reference/*/plugin.toml"))
#: For subprocesses that import the tests or the reference drivers.
PYTHONPATH = os.pathsep.join([str(ROOT), *map(str, REFERENCES)])
for _project in REFERENCES:
    if str(_project) not in sys.path:
        sys.path.insert(0, str(_project))

# Under `make test`, make's own variables reach every subprocess: a project's
# `make` run by a test would then print "make[1]: Entering directory ..." around
# its output, which a user running it from a shell never sees.
for _var in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
    os.environ.pop(_var, None)

_TALLY = pytest.StashKey["Tally"]()


class Tally:
    """``add("fuzz cases tried", n)`` sums; ``note(text)`` adds a line as is."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture(scope="session")
def tally(pytestconfig: pytest.Config) -> Tally:
    return pytestconfig.stash.setdefault(_TALLY, Tally())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its counts to the controller, which prints them."""
    tally = session.config.stash.get(_TALLY, None)
    if tally is not None and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["dpk_tally"] = {
            "counts": dict(tally.counts),
            "notes": tally.notes,
        }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """(pytest-xdist, in the controller) a worker's counts, added to the run's."""
    sent = getattr(node, "workeroutput", {}).get("dpk_tally")
    if sent:
        tally = node.config.stash.setdefault(_TALLY, Tally())
        tally.counts.update(sent["counts"])
        tally.notes.extend(sent["notes"])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    tally = config.stash.get(_TALLY, None)
    if tally is None or not (tally.counts or tally.notes):
        return
    terminalreporter.write_sep("-", "reliability counts")
    for what, n in tally.counts.items():
        terminalreporter.write_line(f"{what}: {n}")
    for text in tally.notes:
        terminalreporter.write_line(text)
    failed = len(terminalreporter.stats.get("failed", [])) + len(
        terminalreporter.stats.get("error", [])
    )
    terminalreporter.write_line(f"failures: {failed}")

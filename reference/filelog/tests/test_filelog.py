"""filelog, called as the daemon calls it: a FIFO per container, ReadLogs
for docker logs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelog.driver import FileLogs
from filelog.options import Options

from plugin.logging import (
    LogBatch,
    LogEntry,
    PartialMetadata,
    ReadLogsRequest,
    decode_frames,
    encode_entries,
)
from plugin.testing import PluginClient

CID = "0123456789abcdef" * 4
T0 = 1_700_000_000_000_000_000
ZERO = "0001-01-01T00:00:00Z"


def entries(n: int, source: str = "stdout", start: int = 0, step: int = 1000) -> list[LogEntry]:
    return [LogEntry(source, T0 + i * step, b"line %d" % i) for i in range(start, start + n)]


def rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


class Container:
    """What the daemon does for one container: a FIFO held open, StartLogging."""

    def __init__(self, client: PluginClient, tmp: Path, cid: str = CID, **opts: str) -> None:
        self.client = client
        self.cid = cid
        self.path = str(tmp / f"fifo-{os.urandom(4).hex()}")
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDWR)
        self.info = {"ContainerID": cid, "ContainerName": "/app", "Config": opts or None}
        self.reply = client.post("/LogDriver.StartLogging", {"File": self.path, "Info": self.info})

    def write(self, items: list[LogEntry]) -> None:
        data = encode_entries(items)
        while data:
            data = data[os.write(self.fd, data[: 1 << 16]) :]

    def stop(self) -> Any:
        try:
            return self.client.call("LogDriver.StopLogging", {"File": self.path})
        finally:
            os.close(self.fd)
            os.unlink(self.path)


def read(client: PluginClient, cid: str = CID, **config: Any) -> list[LogEntry]:
    body = {
        "Info": {"ContainerID": cid},
        "Config": {"Since": ZERO, "Until": ZERO, "Tail": -1, "Follow": False, **config},
    }
    reply = client.post("/LogDriver.ReadLogs", body)
    assert reply.status == 200, reply.body
    got, end = decode_frames(reply.body)
    assert end == len(reply.body)
    # The daemon prints lines as they are: each ends with its newline.
    assert all(e.line.endswith(b"\n") for e in got if not e.partial)
    return [LogEntry(e.source, e.time_nano, e.line[:-1]) if not e.partial else e for e in got]


@pytest.fixture
def driver(tmp_path: Path) -> FileLogs:
    return FileLogs(str(tmp_path / "logs"))


@pytest.fixture
def client(driver: FileLogs) -> Iterator[PluginClient]:
    with PluginClient(driver) as c:
        yield c


# --- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        (
            {"max-size": "big"},
            "invalid log opt max-size='big': a size in bytes with an optional "
            "k, m or g suffix, e.g. 20m",
        ),
        ({"max-size": "100"}, "invalid log opt max-size='100': at least 1k"),
        ({"buffer-size": "1k"}, "invalid log opt buffer-size='1k': at least 64k"),
        ({"max-file": "0"}, "invalid log opt max-file='0': a whole number from 1 to 100"),
        ({"max-file": "x"}, "invalid log opt max-file='x': a whole number from 1 to 100"),
        ({"compress": "yes"}, "invalid log opt compress='yes': true or false"),
        (
            {"labels": "a"},
            "unknown log opt 'labels' for filelog (known: buffer-size, compress, "
            "max-file, max-size)",
        ),
    ],
)
def test_bad_options_refuse_the_start(
    client: PluginClient, tmp_path: Path, opts: dict[str, str], error: str
) -> None:
    container = Container(client, tmp_path, **opts)
    assert (container.reply.status, container.reply.json) == (500, {"Err": error})
    assert not (tmp_path / "logs" / CID).exists()


def test_options_and_the_daemons_own_are_accepted(client: PluginClient, tmp_path: Path) -> None:
    opts = {
        "max-size": "2M",
        "max-file": "3",
        "compress": "False",
        "buffer-size": "128k",
        "mode": "non-blocking",
        "max-buffer-size": "4m",
        "cache-disabled": "true",
    }
    container = Container(client, tmp_path, **opts)
    assert container.reply.status == 200
    assert container.stop() == {}
    assert Options().with_options(opts) == Options(2 << 20, 3, False, 128 << 10)


def test_host_defaults_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_SIZE", "1m")
    monkeypatch.setenv("COMPRESS", "false")
    assert FileLogs("/nonexistent").defaults == Options(1 << 20, 5, False, 8 << 20)
    monkeypatch.setenv("MAX_FILE", "many")
    with pytest.raises(ValueError) as err:
        FileLogs("/nonexistent")
    assert str(err.value) == (
        'bad setting MAX_FILE="many": not an integer from 1 to 100; change it with '
        "docker plugin set PLUGIN MAX_FILE=VALUE"
    )
    monkeypatch.setenv("MAX_FILE", "2")
    monkeypatch.setenv("BUFFER_SIZE", "1k")
    with pytest.raises(ValueError) as err:
        FileLogs("/nonexistent")
    assert str(err.value) == (
        "bad setting BUFFER_SIZE: invalid log opt buffer-size='1024': at least 64k; change it "
        "with docker plugin set PLUGIN BUFFER_SIZE=VALUE"
    )


def test_settings_are_declared_for_config_json() -> None:
    env = {e.name: e.value for e in FileLogs.settings.env()}  # type: ignore[union-attr]
    assert env == {"MAX_SIZE": "20m", "MAX_FILE": "5", "COMPRESS": "true", "BUFFER_SIZE": "8m"}


# --- writing and reading --------------------------------------------------------------


def test_every_line_back_in_order_streams_apart(client: PluginClient, tmp_path: Path) -> None:
    out, err = entries(20_000), entries(20_000, "stderr", 20_000)
    mixed = [e for pair in zip(out, err, strict=True) for e in pair]
    container = Container(client, tmp_path)
    container.write(mixed)
    assert container.stop() == {}
    got = read(client)
    assert got == mixed
    assert [e for e in got if e.source == "stdout"] == out
    counters = json.loads((tmp_path / "logs" / CID / "counters.json").read_text())
    assert counters == {"received": 40_000, "written": 40_000, "dropped": 0}


def test_a_long_line_comes_back_whole(client: PluginClient, tmp_path: Path) -> None:
    line = bytes(range(33, 127)) * 1090  # ~100 KiB
    pieces = [line[i : i + 16384] for i in range(0, len(line), 16384)]
    fragments = [
        LogEntry("stdout", T0, p, True, PartialMetadata(n == len(pieces), "f" * 64, n))
        for n, p in enumerate(pieces, 1)
    ]
    container = Container(client, tmp_path)
    container.write([*entries(1), *fragments, *entries(1, start=1)])
    container.stop()
    assert read(client) == [entries(1)[0], LogEntry("stdout", T0, line), entries(1, start=1)[0]]


def test_a_line_cut_by_the_stop_is_kept(client: PluginClient, tmp_path: Path) -> None:
    container = Container(client, tmp_path)
    container.write([LogEntry("stdout", T0, b"no newline", True, PartialMetadata(False, "x", 1))])
    container.stop()
    assert read(client) == [LogEntry("stdout", T0, b"no newline")]


def test_rotation_by_size_and_count_with_compression(
    client: PluginClient, driver: FileLogs, tmp_path: Path
) -> None:
    container = Container(client, tmp_path, **{"max-size": "1k", "max-file": "3"})
    sent = entries(300)
    for i in range(0, 300, 10):
        container.write(sent[i : i + 10])
        _wait_written(driver, i + 10)  # one batch per write: several rotations
    container.stop()
    files = sorted(p.name for p in (tmp_path / "logs" / CID).iterdir())
    assert files == ["counters.json", "log", "log.1.gz", "log.2.gz"]
    rotated = (tmp_path / "logs" / CID / "log.1.gz").read_bytes()
    kept = decode_frames(gzip.decompress(rotated))[0]
    assert kept and all(e in sent for e in kept)
    got = read(client)
    # The oldest lines were rotated away; what is left is the newest, in order.
    assert got == sent[-len(got) :] and 30 < len(got) < 300


def _wait_written(driver: FileLogs, n: int, cid: str = CID) -> None:
    deadline = time.monotonic() + 10
    while driver._logs[cid].written < n:
        assert time.monotonic() < deadline, f"{n} lines not written within 10 s"
        time.sleep(0.002)


def test_uncompressed_rotation_and_a_single_file(
    client: PluginClient, driver: FileLogs, tmp_path: Path
) -> None:
    container = Container(client, tmp_path, **{"max-size": "1k", "compress": "false"})
    for i in range(0, 200, 10):
        container.write(entries(10, start=i))
        _wait_written(driver, i + 10)
    container.stop()
    names = {p.name for p in (tmp_path / "logs" / CID).iterdir()}
    assert "log.1" in names and not any(n.endswith(".gz") for n in names)
    other = "f" * 64
    single = Container(client, tmp_path, other, **{"max-size": "1k", "max-file": "1"})
    for i in range(0, 200, 10):
        single.write(entries(10, start=i))
        _wait_written(driver, i + 10, other)
    single.stop()
    assert sorted(p.name for p in (tmp_path / "logs" / other).iterdir()) == ["counters.json", "log"]
    got = read(client, other)
    assert got == entries(200)[-len(got) :] and len(got) < 200


def test_tail_since_and_until(client: PluginClient, tmp_path: Path) -> None:
    container = Container(client, tmp_path, **{"max-size": "4k"})
    sent = entries(500)
    container.write(sent)
    container.stop()
    assert read(client, Tail=10) == sent[-10:]
    assert read(client, Tail=0) == []
    assert read(client, Tail=400) == sent[-400:]  # across rotated files
    assert read(client, Tail=1000) == sent
    assert read(client, Since=rfc3339(sent[490].time_nano)) == sent[490:]
    assert read(client, Until=rfc3339(sent[5].time_nano)) == sent[:6]
    since, until = rfc3339(sent[100].time_nano), rfc3339(sent[102].time_nano)
    assert read(client, Since=since, Until=until) == sent[100:103]
    # As json-file: the tail is taken first, then the times.
    assert read(client, Tail=3, Since=since) == sent[-3:]
    assert read(client, Tail=3, Until=until) == []


def test_follow_until_the_container_stops(
    client: PluginClient, driver: FileLogs, tmp_path: Path
) -> None:
    container = Container(client, tmp_path, **{"max-size": "2k"})
    container.write(entries(5))
    _wait_written(driver, 5)
    req = ReadLogsRequest.from_wire(
        {
            "Info": {"ContainerID": CID},
            "Config": {"Since": ZERO, "Until": ZERO, "Tail": 2, "Follow": True},
        }
    )
    got: list[LogEntry] = []
    done = threading.Event()

    def follow() -> None:
        for item in driver.read_logs(req):
            if item is not None:
                got.extend(item)
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == entries(5)[-2:]
    container.write(entries(300, start=5))  # several rotations while following
    deadline = time.monotonic() + 10
    while len(got) < 302 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == entries(305)[3:]
    assert not done.is_set()
    container.stop()
    assert done.wait(10)
    assert got == entries(305)[3:]


def test_follow_from_the_end(client: PluginClient, driver: FileLogs, tmp_path: Path) -> None:
    container = Container(client, tmp_path)
    container.write(entries(5))
    _wait_written(driver, 5)
    req = ReadLogsRequest.from_wire(
        {"Info": {"ContainerID": CID}, "Config": {"Tail": 0, "Follow": True}}
    )
    items: list[LogBatch | None] = []
    reader = threading.Thread(target=lambda: items.extend(driver.read_logs(req)), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while None not in items:  # a heartbeat: it read what there was, and waits
        assert time.monotonic() < deadline
        time.sleep(0.01)
    container.write(entries(1, start=5))
    container.stop()
    reader.join(10)
    assert [e for item in items if item is not None for e in item] == entries(1, start=5)


def test_logs_of_a_stopped_container_and_a_restart(client: PluginClient, tmp_path: Path) -> None:
    first = Container(client, tmp_path)
    first.write(entries(10))
    first.stop()
    # docker logs on a stopped container: a StartLogging/StopLogging pair
    # around ReadLogs; then the container starts again.
    again = Container(client, tmp_path)
    assert read(client) == entries(10)
    again.stop()
    restarted = Container(client, tmp_path)
    restarted.write(entries(10, start=10))
    restarted.stop()
    assert read(client) == entries(20)


def test_a_restarted_plugin_keeps_the_logs_and_cuts_a_torn_entry(tmp_path: Path) -> None:
    with PluginClient(FileLogs(str(tmp_path / "logs"))) as client:
        container = Container(client, tmp_path)
        container.write(entries(100))
        container.stop()
    current = tmp_path / "logs" / CID / "log"
    with open(current, "ab") as f:
        f.write(encode_entries(entries(1, start=100))[:-3])  # killed mid-write
    with PluginClient(FileLogs(str(tmp_path / "logs"))) as client:
        assert read(client) == entries(100)
        container = Container(client, tmp_path)
        container.write(entries(5, start=100))
        container.stop()
        assert read(client) == entries(105)


def test_unknown_and_invalid_containers(client: PluginClient) -> None:
    assert read(client, "e" * 64) == []
    reply = client.post(
        "/LogDriver.ReadLogs",
        {"Info": {"ContainerID": "../../etc"}, "Config": {"Since": ZERO, "Until": ZERO}},
    )
    assert (reply.status, reply.json) == (
        500,
        {"Err": "invalid container ID '../../etc': expected 64 hexadecimal digits"},
    )


def test_capabilities_say_it_reads_logs(client: PluginClient) -> None:
    assert client.call("LogDriver.Capabilities") == {"Cap": {"ReadLogs": True}}


# --- a slow disk -----------------------------------------------------------------------


class Paused(FileLogs):
    stop_timeout = 30  # not what ends the wait: the writer's stall does


def test_a_hung_disk_never_blocks_the_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writes hang (the pause file); the FIFO is still read at full
    speed, lines past the buffer are dropped and counted, StopLogging
    answers at its deadline; once the disk is back what was buffered is
    written."""
    monkeypatch.setenv("FILELOG_TEST_PAUSE", "1")
    root = tmp_path / "logs"
    root.mkdir()
    pause = root / "pause-writes"
    pause.touch()
    driver = Paused(str(root))
    with PluginClient(driver) as client:
        container = Container(client, tmp_path, **{"buffer-size": "64k"})
        sent = entries(100_000)  # ~3 MB: more than the FIFO (1 MiB) and the buffer hold
        writer = threading.Thread(target=container.write, args=(sent,))
        writer.start()
        writer.join(10)
        assert not writer.is_alive(), "the container was blocked"
        t0 = time.monotonic()
        assert container.stop() == {}
        # Nothing written for a second: the disk hangs, StopLogging answers.
        assert 0.9 < time.monotonic() - t0 < 3
        store = driver._logs[CID]
        counters = store.counters()
        assert counters["received"] == 100_000
        assert counters["written"] == 0
        assert 50_000 < counters["dropped"] < 100_000
        pause.unlink()
        assert store.wait_writer(10)
        counters = store.counters()
        assert counters["written"] + counters["dropped"] == 100_000
        assert counters["written"] > 0
        got = read(client)
    # What was kept is whole lines, in order, each once (the drops leave gaps).
    index = {e.line: i for i, e in enumerate(sent)}
    positions = [index[e.line] for e in got]
    assert positions == sorted(set(positions)) and len(got) == counters["written"]
    assert all(e == sent[i] for e, i in zip(got, positions, strict=True))
    assert got[0] == sent[0]
    saved = json.loads((root / CID / "counters.json").read_text())
    assert saved == counters


KILLED = """
import sys, time
from filelog.driver import FileLogs
from plugin.testing import PluginClient
client = PluginClient(FileLogs(sys.argv[1]))
info = {"ContainerID": sys.argv[3], "ContainerName": "/app", "Config": None}
assert client.call("LogDriver.StartLogging", {"File": sys.argv[2], "Info": info}) == {}
print("started", flush=True)
time.sleep(600)
"""


def test_running_containers_are_resumed_after_a_restart(tmp_path: Path) -> None:
    """A plugin killed while containers log: streams.json lists their FIFOs,
    and the next process reads them again (the daemon still writes into
    them) and forgets those that are gone."""
    root = tmp_path / "logs"
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    daemon_end = os.open(fifo, os.O_RDWR)
    project = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [project, *map(Path, sys.path)]))}
    first = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(root), fifo, CID], stdout=subprocess.PIPE, env=env
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == b"started\n"
        os.write(daemon_end, encode_entries(entries(10)))
        deadline = time.monotonic() + 10
        log_file = root / CID / "log"
        while len(decode_frames(log_file.read_bytes())[0]) < 10:
            assert time.monotonic() < deadline, "the first process did not write"
            time.sleep(0.01)
    finally:
        first.kill()
        first.wait()
    saved = json.loads((root / "streams.json").read_text())
    assert list(saved) == [fifo] and saved[fifo]["ContainerID"] == CID
    saved[str(tmp_path / "gone")] = saved[fifo]  # a container that stopped meanwhile
    (root / "streams.json").write_text(json.dumps(saved))
    os.write(daemon_end, encode_entries(entries(10, start=10)))  # while no one reads
    with PluginClient(FileLogs(str(root))) as client:
        assert list(json.loads((root / "streams.json").read_text())) == [fifo]
        os.write(daemon_end, encode_entries(entries(10, start=20)))
        assert client.call("LogDriver.StopLogging", {"File": fifo}) == {}
        assert json.loads((root / "streams.json").read_text()) == {}
        assert read(client) == entries(30)
    os.close(daemon_end)

"""plugin.gojson against Go's encoding/json itself.

The oracle (gojson_oracle/main.go) decodes bodies with Go 1.19's
encoding/json, the Go dockerd 20.10 is built with, into types shaped like the
daemon's container-create body; ``SHAPE`` below describes the same types to
plugin.gojson. Every case compares the two: whether Go fails (a syntax error,
or a type error after decoding what it could) and what the value holds.

The hand-written corpus and Go's answers to it are kept in
data/gojson_golden.jsonl, so the comparison runs without Go; with Go on the
PATH, the file is checked against the oracle and hypothesis compares random
bodies as well. ``python3 tests/unit/test_gojson.py`` rewrites the file.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.gojson import (
    ANY,
    BOOL,
    FLOAT,
    INT,
    INT32,
    STRING,
    UINT32,
    UINT64,
    Embed,
    GoJSONError,
    Map,
    Ptr,
    Shape,
    Slice,
    Struct,
    decode,
    fold,
    parse,
)

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "gojson_golden.jsonl"
ORACLE_SOURCE = HERE / "gojson_oracle" / "main.go"

DRIVER = Struct(("Name", STRING), ("Options", Map(STRING)), name="Driver")
VOLUME_OPTIONS = Struct(
    ("NoCopy", BOOL), ("Labels", Map(STRING)), ("DriverConfig", Ptr(DRIVER)), name="VolumeOptions"
)
MOUNT = Struct(
    ("Type", STRING),
    ("Source", STRING),
    ("Target", STRING),
    ("ReadOnly", BOOL),
    ("VolumeOptions", Ptr(VOLUME_OPTIONS)),
    name="Mount",
)
RESOURCES = Struct(
    ("Memory", INT), ("CPUShares", INT), ("PidsLimit", Ptr(INT)), ("Weight", UINT32),
    name="Resources",
)  # fmt: skip
HOST_CONFIG = Struct(
    ("Binds", Slice(STRING)),
    ("Privileged", BOOL),
    ("Mounts", Slice(MOUNT)),
    Embed("Resources", RESOURCES),
    ("Sysctls", Map(STRING)),
    ("Ratio", FLOAT),
    ("Extra", ANY),
    ("Shared", STRING),
    ("Tagged", STRING),
    ("Nice", INT32),
    ("Devices", Slice(Ptr(MOUNT))),
    ("Counters", Map(INT)),
    name="HostConfig",
)
CONFIG = Struct(
    ("Image", STRING),
    ("Env", Slice(STRING)),
    ("Labels", Map(STRING)),
    ("StopTimeout", Ptr(INT)),
    ("Shared", STRING),
    ("Tagged", STRING, True),
    ("Port", UINT64),
    name="Config",
)
SHAPE = Struct(
    Embed("Config", Ptr(CONFIG)),
    ("HostConfig", Ptr(HOST_CONFIG), True),
    ("Cpuset", STRING),
    Embed("Flat", Ptr(HOST_CONFIG)),
    name="Wrapper",
)


def marshal(value: Any, shape: Shape) -> Any:
    """``value`` as Go's json.Marshal writes it (embedded structs flattened)."""
    if isinstance(shape, Ptr):
        return None if value is None else marshal(value, shape.elem)
    if isinstance(shape, Slice):
        return None if value is None else [marshal(v, shape.elem) for v in value]
    if isinstance(shape, Map):
        return None if value is None else {k: marshal(v, shape.elem) for k, v in value.items()}
    if isinstance(shape, Struct):
        out = {}
        for leaf in shape.leaves():
            holder: Any = value
            entries = shape.entries
            for step in leaf.path[:-1]:
                embed = entries[step]
                assert isinstance(embed, Embed)
                holder = holder[embed.label]
                inner = embed.shape.elem if isinstance(embed.shape, Ptr) else embed.shape
                assert isinstance(inner, Struct)
                entries = inner.entries
                if holder is None:
                    break
            if holder is not None:
                out[leaf.name] = marshal(holder[leaf.name], leaf.shape)
        return out
    return value


def python_result(body: bytes) -> dict[str, Any]:
    """The oracle's answer, computed by plugin.gojson."""
    try:
        value = decode(body, SHAPE)
        kind = ""
    except GoJSONError as exc:
        if exc.kind == "syntax":
            return {"kind": "syntax"}
        kind = "type"
        value = partial(body)
    parts = {
        "Config": marshal(value["Config"], Ptr(CONFIG)),
        "HostConfig": marshal(value["HostConfig"], Ptr(HOST_CONFIG)),
        "Cpuset": value["Cpuset"],
        "Flat": marshal(value["Flat"], Ptr(HOST_CONFIG)),
    }
    return {"kind": kind, "value": parts}


def partial(body: bytes) -> Any:
    """What was decoded despite a type error (Go keeps going after one)."""
    from plugin.gojson import _Decoder

    return _Decoder([]).value(parse(body), SHAPE, SHAPE.zero(), "")


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    # A syntax error decodes nothing: only the kind counts.
    return {"kind": "syntax"} if result["kind"] == "syntax" else canon(result)


def canon(value: Any) -> Any:
    """Numbers as floats: Go writes a float64 in its shortest form
    (9223372036854776000 for 2**63), which reads back as another int."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [canon(v) for v in value]
    return {k: canon(v) for k, v in value.items()}


# --- the oracle ---------------------------------------------------------------------------


class Oracle:
    def __init__(self, binary: str) -> None:
        self.proc = subprocess.Popen(
            [binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def __call__(self, body: bytes) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(base64.b64encode(body).decode() + "\n")
        self.proc.stdin.flush()
        return comparable(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def build_oracle(where: str) -> str | None:
    go = shutil.which("go")
    if go is None:
        return None
    binary = os.path.join(where, "gojson-oracle")
    env = dict(os.environ)
    env.setdefault("GOCACHE", os.path.join(tempfile.gettempdir(), "dpk-gocache"))
    subprocess.run([go, "build", "-o", binary, str(ORACLE_SOURCE)], check=True, env=env)
    return binary


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    where = tempfile.mkdtemp(prefix="dpk-gojson-")
    try:
        binary = build_oracle(where)
        if binary is None:
            pytest.skip("go is not installed: the golden file stands in for the oracle")
        go = Oracle(binary)
        yield go
        go.close()
    finally:
        shutil.rmtree(where, ignore_errors=True)


# --- the corpus ---------------------------------------------------------------------------

CORPUS: list[bytes] = [
    # Case-insensitive keys; the last key that matches a field wins.
    b'{"HostConfig": {"Privileged": false, "privileged": true}}',
    b'{"HostConfig": {"privileged": true, "Privileged": false}}',
    b'{"HostConfig": {"PRIVILEGED": true}}',
    b'{"hostconfig": {"privileged": true}}',
    # Runes whose case folding reaches an ASCII letter: U+017F and U+212A.
    '{"Ho\u017ftconfig": {"Privileged": true}}'.encode(),
    '{"HostConfig": {"Bind\u017f": ["/etc:/x"]}}'.encode(),
    '{"HostConfig": {"Counters": {"k": 1}, "\u212aounters": null}}'.encode(),
    '{"HostConfig": {"Priv\u0131leged": true}}'.encode(),  # dotless i: no match
    '{"HostConfig": {"Priv\u0130leged": true}}'.encode(),
    # Escapes in keys are decoded before matching.
    b'{"HostConfig": {"Privil\\u0065ged": true}}',
    b'{"HostConfig": {"\\u0050rivileged": true}}',
    # null: no change for scalars and structs, nil for pointers, slices, maps.
    b'{"HostConfig": {"Privileged": true, "privileged": null}}',
    b'{"HostConfig": {"Privileged": true}, "hostconfig": null}',
    b'{"HostConfig": {"Binds": ["/a:/b"], "binds": null}}',
    b'{"HostConfig": {"Sysctls": {"a": "1"}, "sysctls": null}}',
    b'{"HostConfig": {"Memory": 5, "memory": null, "Ratio": null, "Nice": null}}',
    b'{"HostConfig": {"Extra": {"a": 1}, "extra": null}}',
    # Merging: objects into structs, pointers and maps; arrays element by element.
    b'{"HostConfig": {"Privileged": true}, "hostconfig": {"Memory": 1}}',
    b'{"HostConfig": {"Sysctls": {"a": "1"}}, "HOSTCONFIG": {"Sysctls": {"b": "2"}}}',
    b'{"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x"}],'
    b' "mounts": [{"Target": "/y"}]}}',
    b'{"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/etc"}, {"Source": "/a"}],'
    b' "mounts": [{"Target": "/y"}], "MOUNTS": [{}, {}]}}',
    b'{"HostConfig": {"Mounts": [{"Source": "/1"}, {"Source": "/2"}, {"Source": "/3"},'
    b' {"Source": "/4"}, {"Source": "/5"}], "mounts": [], "Mounts": [{}, {}]}}',
    b'{"HostConfig": {"Mounts": [{"VolumeOptions": {"DriverConfig": {"Name": "local",'
    b' "Options": {"device": "/etc"}}}}], "mounts": [{"VolumeOptions": {"NoCopy": true}}]}}',
    b'{"HostConfig": {"Devices": [{"Source": "/a"}, {"Source": "/b"}],'
    b' "devices": [null, {"Target": "/t"}]}}',
    b'{"HostConfig": {"Binds": ["/a:/a", "/b:/b"], "binds": [null, "/c:/c"]}}',
    b'{"HostConfig": {"Binds": ["/a:/a", "/b:/b", "/c:/c"], "binds": ["x"], "Binds": [1, 2]}}',
    b'{"HostConfig": {"Extra": {"a": 1, "a": 2, "A": 3}}}',
    b'{"HostConfig": {"Extra": [1, "x", null, true, {"k": [1.5e3]}]}, "hostconfig": {"extra": 7}}',
    b'{"HostConfig": {"Counters": {"a": 1}, "counters": {"a": null, "b": 2}}}',
    # Embedded structs: promoted fields, allocated on first use; conflicts.
    b'{"Image": "x", "Privileged": true, "Binds": ["/etc:/h"]}',
    b'{"Image": "x", "Privileged": true, "HostConfig": {}}',
    b'{"Image": "x", "Privileged": true, "HostConfig": null}',
    b'{"Memory": 7, "CPUShares": 2}',
    b'{"Shared": "hidden", "Tagged": "to Config"}',
    b'{"cpuset": "1", "CPUSET": "2"}',
    # Only the first value is read.
    b'{"HostConfig": {"Privileged": true}} trailing garbage',
    b'{"HostConfig": {"Privileged": true}}{"HostConfig": {"Privileged": false}}',
    b'  \n\t{"Image": "x"}',
    # Wrong types: an error, after Go decoded what it could.
    b'{"HostConfig": {"Privileged": "true", "Memory": 5}}',
    b'{"HostConfig": {"Privileged": 1}}',
    b'{"HostConfig": {"Binds": "/etc:/x", "Privileged": true}}',
    b'{"HostConfig": {"Mounts": {"Source": "/etc"}}}',
    b'{"HostConfig": []}',
    b'{"HostConfig": "x", "Image": "y"}',
    b'{"HostConfig": {"Memory": 1.0}}',
    b'{"HostConfig": {"Memory": 1e2}}',
    b'{"HostConfig": {"Memory": -0}}',
    b'{"HostConfig": {"Memory": 9223372036854775807, "CPUShares": 9223372036854775808}}',
    b'{"HostConfig": {"Nice": 2147483648}}',
    b'{"HostConfig": {"Weight": -1}}',
    b'{"HostConfig": {"Weight": 4294967295}}',
    b'{"Port": 18446744073709551615}',
    b'{"Port": 18446744073709551616}',
    b'{"HostConfig": {"Ratio": 1e400}}',
    b'{"HostConfig": {"Ratio": 1e-400, "Extra": 2.5}}',
    b'{"HostConfig": {"Extra": 1e400}}',
    b'{"HostConfig": {"PidsLimit": 3}, "hostconfig": {"pidslimit": null}}',
    b'{"StopTimeout": 0}',
    b"[]",
    b'"text"',
    b"null",
    b"12",
    # Syntax errors: nothing is decoded.
    b"",
    b"   ",
    b"{",
    b'{"Image": "x",}',
    b'{"Image": NaN}',
    b'{"Image": Infinity}',
    b'{"Image": 01}',
    b"\xef\xbb\xbf{}",
    b'{"Image": "a\x01b"}',
    b'{"Image": "\\x"}',
    b"[" * 200 + b"]" * 200,
    # Text: invalid UTF-8 and lone surrogates become U+FFFD.
    b'{"Image": "a\xffb\xc0\xafc"}',
    b'{"Image": "\xed\xa0\x80"}',
    b'{"Image": "\xe2\x82a"}',
    b'{"Image": "\\ud800x\\udc00\\ud83d\\ude00"}',
    b'{"Image": "\\ud800\\ud800"}',
    b'{"Privileged\xff": true}',
    b'{"Image": "\xf0\x9f\x98\x80", "Labels": {"\xff": "v", "\\ud800": "w"}}',
]


def load_golden() -> list[tuple[bytes, dict[str, Any]]]:
    cases = []
    for line in GOLDEN.read_text().splitlines():
        item = json.loads(line)
        cases.append((base64.b64decode(item["body"]), comparable(item["go"])))
    return cases


def write_golden(binary: str) -> None:
    go = Oracle(binary)
    try:
        lines = [
            json.dumps({"body": base64.b64encode(body).decode(), "go": go(body)}, sort_keys=True)
            for body in CORPUS
        ]
    finally:
        go.close()
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text("\n".join(lines) + "\n")


def test_the_golden_file_holds_the_whole_corpus() -> None:
    assert [body for body, _ in load_golden()] == CORPUS


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_agrees_with_go_on_the_corpus(index: int) -> None:
    body, go = load_golden()[index]
    assert comparable(python_result(body)) == go, body


def test_the_golden_file_is_what_go_says(oracle: Oracle) -> None:
    for body, recorded in load_golden():
        assert oracle(body) == recorded, body


# --- random bodies against Go ---------------------------------------------------------------

NAMES = sorted(
    {leaf.name for shape in (SHAPE, HOST_CONFIG, CONFIG, MOUNT, VOLUME_OPTIONS, DRIVER, RESOURCES)
     for leaf in shape.leaves()} | {"Resources", "Config", "Flat", "Options", "device"}
)  # fmt: skip


def spell(name: str, seed: int) -> str:
    """``name`` with the case of some letters changed and some s/k spelled as
    U+017F / U+212A, as ``seed`` picks (0: as written)."""
    out = []
    for ch in name:
        seed, flag = divmod(seed, 3)
        if flag == 1:
            ch = ch.swapcase()
        elif flag == 2 and ch in "sS":
            ch = "\u017f"
        elif flag == 2 and ch in "kK":
            ch = "\u212a"
        out.append(ch)
    return "".join(out)


def variants(name: str) -> st.SearchStrategy[str]:
    return st.integers(0, 3 ** len(name)).map(lambda seed: spell(name, seed))


KEYS = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.integers(0, 3**12)).map(lambda t: spell(*t)),
    st.text(max_size=6),
)
NUMBERS = st.sampled_from(
    ["0", "-0", "1", "-1", "1.5", "1e2", "2147483648", "4294967296", "9223372036854775808",
     "-9223372036854775809", "18446744073709551616", "1e400", "0.1e-5"]
)  # fmt: skip
STRINGS = st.one_of(
    st.sampled_from(['"/etc:/x"', '"bind"', '"local"', '"/"', '"\\ud800"', '"\\u017f"', '""']),
    st.text(max_size=8).map(json.dumps),
)
SCALARS = st.one_of(st.sampled_from(["null", "true", "false"]), NUMBERS, STRINGS)


def _object(members: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in members) + "}"


VALUES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(KEYS, kids), max_size=6).map(_object),
    ),
    max_leaves=15,
)
BODIES = st.one_of(
    st.lists(st.tuples(KEYS, VALUES), max_size=8).map(_object).map(str.encode),
    st.tuples(
        st.lists(st.tuples(KEYS, VALUES), max_size=6).map(_object).map(str.encode),
        st.binary(max_size=8),
    ).map(lambda pair: pair[0] + pair[1]),
    st.tuples(
        st.lists(st.tuples(KEYS, VALUES), max_size=6).map(_object).map(str.encode),
        st.integers(0, 200),
        st.binary(min_size=1, max_size=3),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
)


@settings(
    max_examples=int(os.environ.get("GOJSON_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODIES)
def test_agrees_with_go_on_random_bodies(oracle: Oracle, body: bytes) -> None:
    assert comparable(python_result(body)) == oracle(body), body


# --- properties that need no oracle ----------------------------------------------------------


@settings(max_examples=100, deadline=None, database=None)
@given(body=BODIES)
def test_only_gojson_errors(body: bytes) -> None:
    try:
        decode(body, SHAPE)
    except GoJSONError as exc:
        assert exc.kind in ("syntax", "type") and str(exc)


@settings(max_examples=200, deadline=None, database=None)
@given(name=st.sampled_from(NAMES), seed=st.integers(0, 3**20))
def test_every_spelling_go_accepts_folds_to_the_name(name: str, seed: int) -> None:
    assert fold(spell(name, seed)) == fold(name)


@settings(max_examples=200, deadline=None, database=None)
@given(
    first=st.booleans(),
    rest=st.lists(st.tuples(variants("Privileged"), st.sampled_from(["true", "false", "null"]))),
)
def test_the_last_spelling_of_privileged_wins(first: bool, rest: list[tuple[str, str]]) -> None:
    members = [("Privileged", json.dumps(first)), *rest]
    body = ('{"HostConfig": ' + _object(members) + "}").encode()
    expected = first
    for _, value in rest:
        if value != "null":  # null leaves a bool alone
            expected = value == "true"
    assert decode(body, SHAPE)["HostConfig"]["Privileged"] is expected


def test_a_syntax_error_names_the_problem() -> None:
    with pytest.raises(GoJSONError) as info:
        decode(b'{"Image": NaN}', SHAPE)
    assert (info.value.kind, str(info.value)) == (
        "syntax",
        "invalid JSON: invalid character 'N' looking for beginning of value",
    )
    with pytest.raises(GoJSONError) as info:
        decode(b"  ", SHAPE)
    assert str(info.value) == "EOF: the body is empty"


def test_a_type_error_reads_like_go() -> None:
    with pytest.raises(GoJSONError) as info:
        decode(b'{"HostConfig": {"Privileged": "true"}}', SHAPE)
    assert (info.value.kind, str(info.value)) == (
        "type",
        "HostConfig.Privileged: string where the daemon expects bool",
    )
    with pytest.raises(GoJSONError) as info:
        decode(b'{"HostConfig": {"Memory": 1e2}}', SHAPE)
    assert str(info.value) == "HostConfig.Memory: number 1e2 where the daemon expects int64"
    with pytest.raises(GoJSONError) as info:
        decode(b"[]", SHAPE)
    assert str(info.value) == "body: array where the daemon expects Wrapper"


def test_values_are_plain_python() -> None:
    value = decode(
        b'{"HostConfig": {"Binds": ["/a:/b"], "Mounts": [{"Source": "/s"}], "Extra": {"n": 2}}}',
        SHAPE,
    )
    hc = value["HostConfig"]
    assert hc["Binds"] == ["/a:/b"] and isinstance(hc["Binds"], list)
    assert hc["Mounts"][0]["Source"] == "/s" and hc["Mounts"][0]["VolumeOptions"] is None
    assert hc["Extra"] == {"n": 2.0}
    assert value["Config"] is None and value["Flat"] is None
    assert hc["Resources"] == {"Memory": 0, "CPUShares": 0, "PidsLimit": None, "Weight": 0}


if __name__ == "__main__":
    where = tempfile.mkdtemp(prefix="dpk-gojson-")
    try:
        binary = build_oracle(where)
        if binary is None:
            sys.exit("go is not installed")
        write_golden(binary)
        print(f"wrote {GOLDEN} ({len(CORPUS)} cases)")
    finally:
        shutil.rmtree(where, ignore_errors=True)

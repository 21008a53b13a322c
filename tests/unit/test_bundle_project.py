"""plugin.toml, and plugin names."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.bundle import Project, ProjectError, load_project, normalize_name

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
[plugin]
name = "acme/vol"
drivers = ["acme.vol:Volumes"]
socket = "vol.sock"
"""
BAD_NAME = (
    "use an image-style reference in lower case, e.g. acme/myplugin:1.0 or "
    "localhost:5000/acme/myplugin"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugin.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ProjectError) as exc:
        load_project(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def test_the_reference_project() -> None:
    project = load_project(ROOT / "plugin.toml")
    assert project == Project(
        root=ROOT,
        name="localvol:latest",
        drivers=("reference.localvol:LocalVolumes",),
        socket="localvol.sock",
        description="Local directory volumes (docker-plugin-kit reference plugin)",
        documentation="https://github.com/docker-plugin-kit/docker-plugin-kit",
        dockerfile="Dockerfile",
        base_image="python:3.11-slim-bookworm",
        fallback_base_image="docker-plugin-kit/python:bookworm",
        slim=True,
    )
    assert project.bundle_dir == ROOT / "rootfs-build"
    assert project.image_tag == "localvol-rootfs:build"


def test_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
[plugin]
name = "localhost:5000/acme/vol:1.2"
drivers = ["acme.vol:Volumes", "acme.net:Net"]
socket = "vol.sock"
description = "d"
documentation = "https://example.invalid"
entrypoint = ["/opt/venv/bin/python", "-m", "acme"]

[build]
dockerfile = "build/Dockerfile"
base_image = "python:3.12-slim"
fallback_base_image = "acme/python:base"
python = "/opt/venv/bin/python"
requirements = ["requests==2.32.3"]
output = "out"
slim = true
""",
    )
    assert load_project(path) == Project(
        root=tmp_path,
        name="localhost:5000/acme/vol:1.2",
        drivers=("acme.vol:Volumes", "acme.net:Net"),
        socket="vol.sock",
        description="d",
        documentation="https://example.invalid",
        dockerfile="build/Dockerfile",
        base_image="python:3.12-slim",
        fallback_base_image="acme/python:base",
        python="/opt/venv/bin/python",
        requirements=("requests==2.32.3",),
        output="out",
        entrypoint=("/opt/venv/bin/python", "-m", "acme"),
        slim=True,
    )


def test_defaults(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD))
    assert project == Project(
        root=tmp_path, name="acme/vol:latest", drivers=("acme.vol:Volumes",), socket="vol.sock"
    )
    assert project.bundle_dir == tmp_path / "rootfs-build"
    assert project.image_tag == "acme/vol-rootfs:build"


def test_image_tag() -> None:
    def tag(name: str) -> str:
        return Project(root=Path("/"), name=name, drivers=(), socket="s").image_tag

    assert tag("localvol:latest") == "localvol-rootfs:build"
    assert tag("a/b:1.0") == "a/b-rootfs:build"
    assert tag("localhost:5000/a/b:1.0") == "localhost:5000/a/b-rootfs:build"
    assert tag("localhost:5000/a/b") == "localhost:5000/a/b-rootfs:build"


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "plugin.toml"
    with pytest.raises(ProjectError) as exc:
        load_project(path)
    assert str(exc.value) == f"{path}: not found (the project config; see README)"


def test_invalid_toml(tmp_path: Path) -> None:
    assert error(tmp_path, "[plugin]\nname = \n") == (
        "invalid TOML: Invalid value (at line 2, column 8)"
    )


def test_unknown_tables_and_keys(tmp_path: Path) -> None:
    assert error(tmp_path, GOOD + "[extra]\na = 1\n") == (
        "unknown table [extra] (known: plugin, build)"
    )
    assert error(tmp_path, "name = 'x'\n" + GOOD) == (
        "unknown key 'name' outside a table (known tables: plugin, build)"
    )
    assert error(tmp_path, GOOD + "sockets = 'x'\n") == (
        "unknown key plugin.sockets (known: description, documentation, drivers, entrypoint, "
        "name, socket)"
    )
    assert error(tmp_path, GOOD + "[build]\nimage = 'x'\n") == (
        "unknown key build.image (known: base_image, dockerfile, fallback_base_image, keep, "
        "output, python, requirements, slim)"
    )
    assert error(tmp_path, GOOD + "[build]\nslim = 'yes'\n") == "build.slim must be true or false"
    assert error(tmp_path, GOOD + "[build]\nkeep = ['usr/share/zoneinfo']\n") == (
        "build.keep: 'usr/share/zoneinfo' must be an absolute path in the image (glob patterns "
        "allowed: *, ?, [...], ** for any depth)"
    )
    assert error(tmp_path, GOOD + "[build]\nkeep = '/etc/x'\n") == (
        "build.keep must be a list of strings"
    )
    assert error(tmp_path, "plugin = 'x'\n") == "plugin must be a table ([plugin])"


def test_required_keys(tmp_path: Path) -> None:
    assert error(tmp_path, "") == "plugin.name is required"
    assert error(tmp_path, "[plugin]\nname = 'a'\nsocket = 's.sock'\n") == (
        "plugin.drivers is required (e.g. ['mypkg.driver:MyVolumes'])"
    )
    assert error(tmp_path, "[plugin]\nname = 'a'\ndrivers = []\nsocket = 's.sock'\n") == (
        "plugin.drivers is required (e.g. ['mypkg.driver:MyVolumes'])"
    )
    assert error(tmp_path, "[plugin]\nname = 'a'\ndrivers = ['m:C']\n") == (
        "plugin.socket is required"
    )
    assert error(tmp_path, "[plugin]\nname = 'a'\ndrivers = ['m:C']\nsocket = ''\n") == (
        "plugin.socket is required"
    )


def test_wrong_types(tmp_path: Path) -> None:
    assert error(tmp_path, GOOD.replace('"vol.sock"', "1")) == "plugin.socket must be a string"
    assert error(tmp_path, GOOD.replace('"acme/vol"', "['a']")) == "plugin.name must be a string"
    assert error(tmp_path, GOOD.replace('["acme.vol:Volumes"]', '"acme.vol:Volumes"')) == (
        "plugin.drivers must be a list of strings"
    )
    assert error(tmp_path, GOOD + "entrypoint = ['a', 1]\n") == (
        "plugin.entrypoint must be a list of strings"
    )
    assert error(tmp_path, GOOD + "[build]\nrequirements = 'x'\n") == (
        "build.requirements must be a list of strings"
    )
    assert error(tmp_path, GOOD + "[build]\npython = true\n") == "build.python must be a string"


@pytest.mark.parametrize(
    "spec", ["acme.vol", "acme.vol:", ":Volumes", "acme..vol:V", ".acme:V", "acme.vol:V.W", "a b:C"]
)
def test_a_bad_driver_spec(tmp_path: Path, spec: str) -> None:
    text = GOOD.replace('"acme.vol:Volumes"', repr(spec))
    assert error(tmp_path, text) == f"plugin.drivers: {spec!r} must be written module:ClassName"


def test_a_bad_socket(tmp_path: Path) -> None:
    assert error(tmp_path, GOOD.replace('"vol.sock"', '"run/vol.sock"')) == (
        "plugin.socket: must be a file name, not a path: 'run/vol.sock'"
    )
    long = "a" * 19 + ".sock"
    assert error(tmp_path, GOOD.replace('"vol.sock"', repr(long))) == (
        f"plugin.socket: '{long}' is 24 characters; the daemon's limit is 23"
    )


@pytest.mark.parametrize(
    "name",
    [
        "LocalVol",
        "acme/Vol",
        "local vol",
        "acme/../vol",
        "acme/vol..x",
        "acme//vol",
        "acme/vol:",
        "acme/vol:-x",
        "acme/vol:t\u00e4g",
        "/acme/vol",
        "acme/vol/",
        "",
        "a" * 256,
    ],
)
def test_invalid_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProjectError) as exc:
        normalize_name(name)
    assert str(exc.value) == f"invalid plugin name {name!r}: {BAD_NAME}"
    assert error(tmp_path, GOOD.replace('"acme/vol"', repr(name))) == (
        f"plugin.name: invalid plugin name {name!r}: {BAD_NAME}"
    )


def test_a_digest_is_not_a_name() -> None:
    name = "acme/vol@sha256:" + "0" * 64
    with pytest.raises(ProjectError) as exc:
        normalize_name(name)
    assert str(exc.value) == (
        f"invalid plugin name {name!r}: a plugin name has a tag, not a digest "
        "(e.g. acme/myplugin:1.0)"
    )


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("localvol", "localvol:latest"),
        ("localvol:latest", "localvol:latest"),
        ("a/b:1.0", "a/b:1.0"),
        ("acme/my-vol_2.x", "acme/my-vol_2.x:latest"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("localhost:5000/a/b:next", "localhost:5000/a/b:next"),
        ("registry.example.com/team/vol:1.2.3-rc1", "registry.example.com/team/vol:1.2.3-rc1"),
        ("docker.io/acme/vol", "docker.io/acme/vol:latest"),
    ],
)
def test_normalize_name(name: str, normal: str) -> None:
    assert normalize_name(name) == normal

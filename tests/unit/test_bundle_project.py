"""plugin.toml, and plugin names."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.bundle import Project, ProjectError, load_project, normalize_name
from plugin.bundle._project import KEYS, TEMPLATES

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
    here = ROOT / "reference" / "localvol"
    project = load_project(here)  # the directory is enough
    assert project == Project(
        root=here,
        name="localvol:latest",
        drivers=("localvol.driver:LocalVolumes",),
        socket="localvol.sock",
        description="Local directory volumes (docker-plugin-kit reference plugin)",
        documentation="https://github.com/docker-plugin-kit/docker-plugin-kit",
        slim=True,
    )
    assert project.bundle_dir == here / "rootfs-build"
    assert project.image_tag == "localvol-rootfs:build"
    # The kit's own Dockerfile and template: the project has neither.
    assert project.dockerfile_path == TEMPLATES / "Dockerfile"
    assert project.template_path == TEMPLATES / "config.json.j2"
    assert project.own_packages == ("localvol",)


def test_the_checkout_links_to_the_kit_defaults() -> None:
    for name in ("Dockerfile", "config.json.j2"):
        assert (ROOT / name).is_symlink()
        assert (ROOT / name).resolve() == (TEMPLATES / name).resolve()


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
config_template = "build/config.json.j2"
packages = ["acme", "helpers"]
base_image = "python:3.12-slim"
fallback_base_image = "acme/python:base"
python = "/opt/venv/bin/python"
requirements = ["requests==2.32.3"]
output = "out"
slim = false

[init]
kit_version = "0.1.0"
type = "volume"
name = "acme/vol"
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
        config_template="build/config.json.j2",
        packages=("acme", "helpers"),
        base_image="python:3.12-slim",
        fallback_base_image="acme/python:base",
        python="/opt/venv/bin/python",
        requirements=("requests==2.32.3",),
        output="out",
        entrypoint=("/opt/venv/bin/python", "-m", "acme"),
        slim=False,
    )


def test_defaults(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD))
    assert project == Project(
        root=tmp_path, name="acme/vol:latest", drivers=("acme.vol:Volumes",), socket="vol.sock"
    )
    assert project.bundle_dir == tmp_path / "rootfs-build"
    assert project.image_tag == "acme/vol-rootfs:build"
    assert project.slim is True
    assert project.own_packages == ("acme",)
    assert project.dockerfile_path == TEMPLATES / "Dockerfile"
    assert project.template_path == TEMPLATES / "config.json.j2"


def test_the_socket_defaults_to_the_name(tmp_path: Path) -> None:
    text = GOOD.replace('socket = "vol.sock"\n', "")
    assert load_project(write(tmp_path, text)).socket == "vol.sock"
    long = text.replace('"acme/vol"', '"acme/' + "v" * 19 + ':1.0"')
    assert error(tmp_path, long) == (
        f"plugin.socket (the default, from plugin.name): '{'v' * 19}.sock' is 24 characters; "
        "the daemon's limit is 23 (its socket path must fit in 108 bytes)"
    )


def test_paths_are_relative_to_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "proj" / "config.json.j2").write_text("{}\n")
    write(tmp_path / "proj", GOOD + '[build]\nrequirements = ["requests>=2", "./w/a.whl"]\n')
    monkeypatch.chdir(tmp_path)
    project = load_project("proj")
    assert project.root == tmp_path / "proj"
    # The project's own files win over the kit's.
    assert project.dockerfile_path == tmp_path / "proj" / "Dockerfile"
    assert project.template_path == tmp_path / "proj" / "config.json.j2"
    assert project.requirement_args() == ["requests>=2", str(tmp_path / "proj" / "w" / "a.whl")]
    assert project.bundle_dir == tmp_path / "proj" / "rootfs-build"


def test_every_key_is_documented() -> None:
    assert [k.dotted for k in KEYS] == [
        "plugin.name", "plugin.drivers", "plugin.socket", "plugin.description",
        "plugin.documentation", "plugin.entrypoint", "build.requirements", "build.packages",
        "build.dockerfile", "build.config_template", "build.base_image",
        "build.fallback_base_image", "build.python", "build.slim", "build.keep", "build.output",
        "init.kit_version", "init.type", "init.name",
    ]  # fmt: skip
    assert all(k.default and k.doc for k in KEYS)


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
    assert str(exc.value) == (
        f"{path}: not found (a plugin project has a plugin.toml; "
        "`docker-plugin-kit init DIR` writes one)"
    )


def test_invalid_toml(tmp_path: Path) -> None:
    assert error(tmp_path, "[plugin]\nname = \n") == (
        "invalid TOML: Invalid value (at line 2, column 8)"
    )


def test_unknown_tables_and_keys(tmp_path: Path) -> None:
    assert error(tmp_path, GOOD + "[extra]\na = 1\n") == (
        "unknown table [extra] (known: build, init, plugin)"
    )
    assert error(tmp_path, GOOD + "[bulid]\na = 1\n") == (
        "unknown table [bulid] (did you mean [build]?)"
    )
    assert error(tmp_path, "name = 'x'\n" + GOOD) == (
        "unknown key 'name' outside a table (did you mean plugin.name?)"
    )
    assert error(tmp_path, "colour = 'x'\n" + GOOD) == (
        "unknown key 'colour' outside a table (known tables: plugin, build, init)"
    )
    assert error(tmp_path, GOOD + "sockets = 'x'\n") == (
        "unknown key plugin.sockets (did you mean plugin.socket?)"
    )
    assert error(tmp_path, GOOD + "slim = true\n") == (
        "unknown key plugin.slim (did you mean build.slim?)"
    )
    assert error(tmp_path, GOOD + "[build]\nrequirement = ['x']\n") == (
        "unknown key build.requirement (did you mean build.requirements?)"
    )
    assert error(tmp_path, GOOD + "[build]\ncolour = 'x'\n") == (
        "unknown key build.colour (known: base_image, config_template, dockerfile, "
        "fallback_base_image, keep, output, packages, python, requirements, slim)"
    )
    assert error(tmp_path, GOOD + "[init]\ntype = 1\n") == "init.type must be a string"
    assert error(tmp_path, GOOD + "[build]\npackages = ['a.b']\n") == (
        "build.packages: 'a.b' must be a top-level package or module name (no dots, no paths)"
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
    assert error(tmp_path, "[plugin]\nname = 'a'\ndrivers = ['m:C']\nsocket = ''\n") == (
        "plugin.socket must not be empty"
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
        f"plugin.socket: '{long}' is 24 characters; the daemon's limit is 23 "
        "(its socket path must fit in 108 bytes)"
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


def test_the_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in KEYS:
        assert key.row() in readme.splitlines(), key.dotted


def test_the_readme_says_how_to_write_your_own_plugin_first() -> None:
    headings = [line for line in (ROOT / "README.md").read_text().splitlines() if line[:3] == "## "]
    assert headings[:2] == ["## The two commands", "## Write your own plugin"]

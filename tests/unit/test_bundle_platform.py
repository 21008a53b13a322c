"""Architectures: of a rootfs (its ELF files), of a tag (the convention), as
recorded in config.json; and the base image for another architecture."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Literal

import pytest

from plugin.bundle import BuildError, BundleError
from plugin.bundle import _foreign as foreign
from plugin.bundle._platform import (
    PLATFORM_ENV,
    arch_output,
    arch_tag,
    check_platform,
    elf_arch,
    foreign_elf_files,
    get_arch,
    record_platform,
    recorded_platform,
    rootfs_arch,
    tag_arch,
)


def elf(machine: int, big_endian: bool = False) -> bytes:
    """The first bytes of a 64-bit ELF file for ``machine``."""
    order: Literal["little", "big"] = "big" if big_endian else "little"
    head = b"\x7fELF\x02" + (b"\x02" if big_endian else b"\x01") + b"\x01" + b"\x00" * 9
    return head + (2).to_bytes(2, order) + machine.to_bytes(2, order) + b"\x00" * 44


AARCH64 = elf(183)
X86_64 = elf(62)


def make_rootfs(root: Path, python: bytes = AARCH64) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "usr/bin/python3.11").write_bytes(python)
    (rootfs / "usr/bin/python3").symlink_to("python3.11")
    (rootfs / "bin").symlink_to("/usr/bin")  # absolute: must stay in the rootfs
    return rootfs


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "name"),
    [("arm64", "arm64"), ("linux/arm64", "arm64"), ("linux/arm64/v8", "arm64"),
     ("aarch64", "arm64"), ("x86_64", "amd64"), ("AMD64", "amd64")],
)  # fmt: skip
def test_architecture_names(given: str, name: str) -> None:
    assert get_arch(given).name == name


def test_an_unsupported_architecture_is_named_with_the_supported_ones() -> None:
    with pytest.raises(BundleError) as err:
        get_arch("riscv64")
    assert str(err.value) == "architecture 'riscv64' is not supported (supported: amd64, arm64)"


@pytest.mark.parametrize(
    ("tag", "arch"),
    [("1.0-arm64", "arm64"), ("arm64", "arm64"), ("1.0-amd64", "amd64"), ("1.0", None),
     ("latest", None), ("1.0-rc1", None), ("x86_64", None), ("2-ARM64", "arm64")],
)  # fmt: skip
def test_the_tag_convention(tag: str, arch: str | None) -> None:
    assert tag_arch(tag) == arch


@pytest.mark.parametrize(
    ("name", "arch", "expected"),
    [("acme/vol:1.0-arm64", "amd64", "acme/vol:1.0-amd64"),
     ("acme/vol:arm64", "amd64", "acme/vol:amd64"),
     ("acme/vol:1.0", "amd64", "acme/vol:1.0-amd64"),
     ("localhost:5000/acme/vol", "arm64", "localhost:5000/acme/vol:latest-arm64")],
)  # fmt: skip
def test_the_same_tag_for_another_architecture(name: str, arch: str, expected: str) -> None:
    assert arch_tag(name, arch) == expected


def test_the_bundle_directory_of_an_architecture() -> None:
    assert arch_output("rootfs-build", "arm64") == "rootfs-build-arm64"
    assert arch_output("/tmp/out/", "amd64") == "/tmp/out-amd64"


# --- the rootfs ---------------------------------------------------------------------------


def test_elf_machines(tmp_path: Path) -> None:
    cases = {
        "x86": X86_64,
        "arm": AARCH64,
        "s390x": elf(22, big_endian=True),
        "odd": elf(999),
        "text": b"#!/bin/sh\n" + b"x" * 30,
        "short": b"\x7fELF",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    found = {name: elf_arch(tmp_path / name) for name in cases}
    assert found == {
        "x86": "amd64",
        "arm": "arm64",
        "s390x": "s390x",
        "odd": "elf-999",
        "text": None,
        "short": None,
    }
    assert elf_arch(tmp_path / "missing") is None


def test_rootfs_arch_follows_links_inside_the_rootfs(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    assert rootfs_arch(rootfs, ["/usr/bin/python3", "-m", "plugin"]) == "arm64"
    assert rootfs_arch(rootfs, ["/bin/python3"]) == "arm64"


def test_rootfs_arch_of_a_script_is_its_interpreters(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (rootfs / "run.sh").write_text("#!/usr/bin/python3 -u\nprint()\n")
    assert rootfs_arch(rootfs, ["/run.sh"]) == "arm64"


def test_rootfs_arch_errors(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (rootfs / "data.txt").write_text("hello\n")
    with pytest.raises(BundleError) as err:
        rootfs_arch(rootfs, ["/usr/bin/nothing"])
    assert str(err.value) == f"{rootfs}: the entrypoint /usr/bin/nothing is not in the rootfs"
    with pytest.raises(BundleError) as err:
        rootfs_arch(rootfs, ["/data.txt"])
    assert str(err.value) == (
        f"{rootfs}: cannot tell the architecture of the entrypoint /data.txt (neither an ELF "
        "program nor a script with an ELF interpreter)"
    )
    with pytest.raises(BundleError) as err:
        rootfs_arch(rootfs, [])
    assert str(err.value) == f"{rootfs}: no entrypoint to read the architecture from"


def test_foreign_elf_files(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    (rootfs / "lib").mkdir()
    (rootfs / "lib/ext.so").write_bytes(X86_64)
    (rootfs / "lib/ok.so").write_bytes(AARCH64)
    assert foreign_elf_files(rootfs, "arm64") == ["/lib/ext.so (amd64)"]
    assert sorted(foreign_elf_files(rootfs, "amd64")) == [
        "/lib/ok.so (arm64)",
        "/usr/bin/python3.11 (arm64)",
    ]


# --- the record in config.json ------------------------------------------------------------


def test_the_platform_is_recorded_from_the_rootfs(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    config: dict[str, Any] = {
        "entrypoint": ["/usr/bin/python3"],
        "env": [
            {"name": "A", "value": "1"},
            {"name": PLATFORM_ENV, "value": "linux/amd64"},  # stale: replaced
        ],
    }
    # The image may claim amd64: the rootfs's own programs say otherwise.
    assert record_platform(config, rootfs, {"Architecture": "amd64"}) == "linux/arm64"
    assert config["env"] == [
        {"name": "A", "value": "1"},
        {
            "name": PLATFORM_ENV,
            "description": "the platform this plugin's rootfs is built for (set by the builder)",
            "settable": [],
            "value": "linux/arm64",
        },
    ]
    assert recorded_platform(config) == "linux/arm64"


def test_without_a_rootfs_the_image_says_the_platform(tmp_path: Path) -> None:
    config: dict[str, Any] = {"entrypoint": ["/usr/bin/python3"]}
    assert record_platform(config, None, {"Architecture": "arm64"}) == "linux/arm64"
    missing: dict[str, Any] = {"entrypoint": ["/nope"]}
    assert record_platform(missing, make_rootfs(tmp_path), {"Architecture": "amd64"}) == (
        "linux/amd64"
    )


def test_recorded_platform_of_an_inspected_plugin() -> None:
    config = {"Env": [{"Name": "X", "Value": "1"}, {"Name": PLATFORM_ENV, "Value": "linux/arm64"}]}
    assert recorded_platform(config) == "linux/arm64"
    assert recorded_platform({"Env": [{"Name": PLATFORM_ENV, "Value": ""}]}) is None
    assert recorded_platform({}) is None


def test_check_platform(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path)
    config: dict[str, Any] = {"entrypoint": ["/usr/bin/python3"]}
    record_platform(config, rootfs, {})
    check_platform(rootfs, config, "arm64")
    with pytest.raises(BuildError) as err:
        check_platform(rootfs, config, "amd64")
    assert str(err.value) == (
        "the rootfs built for linux/amd64 runs /usr/bin/python3 for linux/arm64: the base image "
        "is for another architecture"
    )
    (rootfs / "ext.so").write_bytes(X86_64)
    with pytest.raises(BuildError) as err:
        check_platform(rootfs, config, "arm64")
    assert str(err.value) == (
        f"{rootfs} has programs or libraries for another architecture than arm64: "
        "/ext.so (amd64) (a wheel or a COPY made for another platform?)"
    )


# --- emulation ---------------------------------------------------------------------------


def binfmt_dir(tmp_path: Path, entry: str | None) -> Path:
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "register").write_text("")
    if entry is not None:
        (binfmt / "qemu-aarch64").write_text(entry)
    return binfmt


def test_emulation_registered_with_the_f_flag(tmp_path: Path) -> None:
    binfmt = binfmt_dir(tmp_path, "enabled\ninterpreter /usr/libexec/qemu-binfmt/x\nflags: POF\n")
    lines: list[str] = []
    how = foreign.ensure_emulation(get_arch("arm64"), lines.append, binfmt)
    assert how == "arm64 programs run under qemu-aarch64 (flags POF)"
    assert lines == []


def test_emulation_without_the_f_flag_is_refused(tmp_path: Path) -> None:
    binfmt = binfmt_dir(tmp_path, "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: OC\n")
    with pytest.raises(BuildError) as err:
        foreign.ensure_emulation(get_arch("arm64"), print, binfmt)
    assert str(err.value) == (
        f"the arm64 emulator is registered without the F flag ({binfmt}/qemu-aarch64: flags OC), "
        "so containers cannot find it; register Debian's qemu-user-static instead: "
        f"echo -1 > {binfmt}/qemu-aarch64; cat /usr/lib/binfmt.d/qemu-aarch64.conf > "
        f"{binfmt}/register"
    )


def test_disabled_emulation_is_refused(tmp_path: Path) -> None:
    binfmt = binfmt_dir(tmp_path, "disabled\nflags: F\n")
    with pytest.raises(BuildError) as err:
        foreign.ensure_emulation(get_arch("arm64"), print, binfmt)
    assert str(err.value) == (
        f"the arm64 emulator is registered but disabled ({binfmt}/qemu-aarch64); "
        f"enable it: echo 1 > {binfmt}/qemu-aarch64"
    )


def test_emulation_is_registered_from_qemu_user_static(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binfmt = binfmt_dir(tmp_path, None)
    conf = tmp_path / "binfmt.d"
    conf.mkdir()
    line = ":qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF"
    (conf / "qemu-aarch64.conf").write_text(line + "\n")
    monkeypatch.setattr(foreign, "BINFMT_CONF", conf)
    lines: list[str] = []
    # The kernel would make the entry; this directory does not.
    with pytest.raises(BuildError) as err:
        foreign.ensure_emulation(get_arch("arm64"), lines.append, binfmt)
    assert (binfmt / "register").read_text() == line + "\n"
    assert lines == ["registered qemu-aarch64.conf with the kernel (binfmt_misc)"]
    assert str(err.value) == (
        f"{binfmt}/qemu-aarch64 did not appear after registering the arm64 emulator"
    )


# --- the base image -------------------------------------------------------------------------


def test_the_debian_mirror_of_this_host(tmp_path: Path) -> None:
    d = tmp_path / "etc/apt/sources.list.d"
    d.mkdir(parents=True)
    (d / "debian.sources").write_text(
        "Types: deb\n# a comment: with a colon\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
    )
    assert foreign._mirror(tmp_path) == "http://mirror.invalid/debian"
    (d / "debian.sources").unlink()
    (tmp_path / "etc/apt/sources.list").write_text(
        "# old style\ndeb http://security.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://old.invalid/debian bookworm main\n"
    )
    assert foreign._mirror(tmp_path) == "http://old.invalid/debian"
    (tmp_path / "etc/apt/sources.list").unlink()
    assert foreign._mirror(tmp_path) is None


class LoadingAPI:
    def __init__(self) -> None:
        self.loaded: dict[str, bytes] = {}

    def load_image(self, data: Any) -> list[dict[str, Any]]:
        with tarfile.open(fileobj=io.BytesIO(data.read())) as tf:
            for member in tf:
                f = tf.extractfile(member)
                assert f is not None
                self.loaded[member.name] = f.read()
        return [{"stream": "Loaded image"}]


class Image:
    def __init__(self, id: str, attrs: dict[str, Any]) -> None:
        self.id = id
        self.attrs = attrs


class Images:
    def __init__(self, api: LoadingAPI) -> None:
        self.api = api
        self.made: dict[str, Image] = {}

    def get(self, name: str) -> Image:
        from docker.errors import ImageNotFound  # type: ignore[import-untyped,unused-ignore]

        if name in self.made:
            return self.made[name]
        if "manifest.json" in self.api.loaded:
            manifest = json.loads(self.api.loaded["manifest.json"])[0]
            if name in manifest["RepoTags"]:
                config = json.loads(self.api.loaded[manifest["Config"]])
                return Image(
                    "sha256:" + manifest["Config"][:-5],
                    {"Architecture": config["architecture"], "Config": config["config"]},
                )
        raise ImageNotFound(f"No such image: {name}")


class LoadingClient:
    def __init__(self) -> None:
        self.api = LoadingAPI()
        self.images = Images(self.api)


def test_the_base_image_is_loaded_with_its_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer_bytes = b"pretend this is a rootfs tar" * 100

    def unpack(arch: Any, out: Path, report: Any) -> None:
        out.write_bytes(layer_bytes)

    monkeypatch.setattr(foreign, "_unpack_packages", unpack)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/" + name)
    client = LoadingClient()
    lines: list[str] = []
    arm64 = get_arch("arm64")
    image_id = foreign.make_base_image(client, "acme/python:bookworm-arm64", arm64, lines.append)
    loaded = client.api.loaded
    manifest = json.loads(loaded["manifest.json"])
    assert manifest[0]["RepoTags"] == ["acme/python:bookworm-arm64"]
    assert loaded["layer.tar"] == layer_bytes
    config = json.loads(loaded[manifest[0]["Config"]])
    import hashlib

    assert config["architecture"] == "arm64"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]
    key = foreign._recipe_key(foreign.base_recipe(arm64))
    assert config["config"]["Labels"] == {foreign.BASE_LABEL: key}
    assert image_id == "sha256:" + manifest[0]["Config"][:-5]
    assert lines == ["loading acme/python:bookworm-arm64 (0 MB)"]

    # Made from the same recipe: kept.
    lines.clear()
    assert foreign.make_base_image(client, "acme/python:bookworm-arm64", arm64, lines.append) == (
        image_id
    )
    assert lines == [f"acme/python:bookworm-arm64 is up to date (recipe {key})"]


def test_the_recipe_changes_with_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    arm64 = get_arch("arm64")
    before = foreign._recipe_key(foreign.base_recipe(arm64))
    assert before != foreign._recipe_key(foreign.base_recipe(get_arch("amd64")))
    monkeypatch.setattr(foreign, "PACKAGES", (*foreign.PACKAGES, "python3-yaml"))
    assert foreign._recipe_key(foreign.base_recipe(arm64)) != before


def test_a_base_image_of_the_project_for_that_architecture_is_used(tmp_path: Path) -> None:
    client = LoadingClient()
    client.images.made["python:3.11-slim-arm64"] = Image("sha256:abc", {"Architecture": "arm64"})
    lines: list[str] = []
    base = foreign.foreign_base_image(
        client, "python:3.11-slim", "acme/python:bookworm", get_arch("arm64"), lines.append
    )
    assert (base, lines) == ("python:3.11-slim-arm64", [])
    client.images.made["python:3.11-slim-arm64"].attrs["Architecture"] = "amd64"
    with pytest.raises(BuildError) as err:
        foreign.foreign_base_image(
            client, "python:3.11-slim", "acme/python:bookworm", get_arch("arm64"), lines.append
        )
    assert str(err.value) == "base image python:3.11-slim-arm64 is for amd64, not arm64"


def test_without_root_the_packages_to_install_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BuildError) as err:
        foreign._apt_install(["qemu-user-static"], "running arm64 programs", print)
    assert str(err.value) == (
        "running arm64 programs: install Debian's qemu-user-static (as root: apt-get install)"
    )


class PullingImage(Image):
    def __init__(self, id: str, attrs: dict[str, Any], log: list[tuple[Any, ...]]) -> None:
        super().__init__(id, attrs)
        self.log = log

    def tag(self, repo: str, tag: str) -> None:
        self.log.append(("tag", self.id, repo, tag))


class PullingClient(LoadingClient):
    """A daemon whose pull of another platform moves the plain tag."""

    def __init__(self, pulled_arch: str | None, native: bool = True) -> None:
        super().__init__()
        self.log: list[tuple[Any, ...]] = []
        self.pulled_arch = pulled_arch
        if native:
            self.images.made["python:3.11-slim"] = Image("sha256:native", {"Architecture": "amd64"})
        self.images.pull = self.pull  # type: ignore[attr-defined]
        self.api.tag = lambda id, repo, tag: self.log.append(("api.tag", id, repo, tag))  # type: ignore[attr-defined]
        self.api.remove_image = lambda name, noprune: self.log.append(("untag", name))  # type: ignore[attr-defined]

    def pull(self, repo: str, tag: str, platform: str) -> Image:
        from docker.errors import APIError  # type: ignore[import-untyped,unused-ignore]

        self.log.append(("pull", repo, tag, platform))
        if self.pulled_arch is None:
            raise APIError("500", explanation="Get https://registry-1.docker.io/v2/: no route")
        image = PullingImage("sha256:pulled", {"Architecture": self.pulled_arch}, self.log)
        self.images.made[f"{repo}:{tag}"] = image
        return image


def test_the_base_is_pulled_for_that_platform_and_the_plain_tag_put_back() -> None:
    client = PullingClient("arm64")
    lines: list[str] = []
    base = foreign.foreign_base_image(
        client, "python:3.11-slim", "acme/python:bookworm", get_arch("arm64"), lines.append
    )
    assert base == "python:3.11-slim-arm64"
    assert client.log == [
        ("pull", "python", "3.11-slim", "linux/arm64"),
        ("tag", "sha256:pulled", "python", "3.11-slim-arm64"),
        ("api.tag", "sha256:native", "python", "3.11-slim"),
    ]
    assert lines == ["pulling python:3.11-slim for linux/arm64"]


def test_a_base_pulled_for_the_wrong_platform_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    monkeypatch.setattr(foreign, "make_base_image", lambda c, tag, a, r: made.append(tag))
    client = PullingClient("amd64", native=False)  # a daemon that ignored the platform
    lines: list[str] = []
    base = foreign.foreign_base_image(
        client, "python:3.11-slim", "acme/python:bookworm", get_arch("arm64"), lines.append
    )
    assert (base, made) == ("acme/python:bookworm-arm64", ["acme/python:bookworm-arm64"])
    assert client.log[-1] == ("untag", "python:3.11-slim")
    assert lines == [
        "pulling python:3.11-slim for linux/arm64",
        "python:3.11-slim pulled for linux/arm64 is for amd64: not used",
        "using acme/python:bookworm-arm64 (made from Debian's packages)",
    ]


def test_without_a_registry_the_base_is_made_from_debian(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    monkeypatch.setattr(foreign, "make_base_image", lambda c, tag, a, r: made.append(tag))
    client = PullingClient(None)
    lines: list[str] = []
    base = foreign.foreign_base_image(
        client, "python:3.11-slim", "acme/python:bookworm", get_arch("arm64"), lines.append
    )
    assert (base, made) == ("acme/python:bookworm-arm64", ["acme/python:bookworm-arm64"])
    assert lines == [
        "pulling python:3.11-slim for linux/arm64",
        "python:3.11-slim for linux/arm64 cannot be pulled (Get https://registry-1.docker.io/v2/: "
        "no route)",
        "using acme/python:bookworm-arm64 (made from Debian's packages)",
    ]
    assert client.log == [("pull", "python", "3.11-slim", "linux/arm64")]  # nothing moved


def test_a_base_made_here_before_is_used_without_pulling(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    monkeypatch.setattr(foreign, "make_base_image", lambda c, tag, a, r: made.append(tag))
    client = PullingClient("arm64")
    client.images.made["acme/python:bookworm-arm64"] = Image(
        "sha256:deb", {"Architecture": "arm64"}
    )
    lines: list[str] = []
    base = foreign.foreign_base_image(
        client, "python:3.11-slim", "acme/python:bookworm", get_arch("arm64"), lines.append
    )
    # make_base_image keeps it when its recipe is the same.
    assert (base, made, client.log) == (
        "acme/python:bookworm-arm64",
        ["acme/python:bookworm-arm64"],
        [],
    )


# --- the command line -----------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, list[str]]:
    from plugin.bundle.__main__ import main

    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue().splitlines()


def test_validate_checks_the_recorded_platform_against_the_rootfs(tmp_path: Path) -> None:
    from tests.unit.test_bundle_config import good
    from tests.unit.test_bundle_config import make_rootfs as make_plugin_rootfs

    rootfs = make_plugin_rootfs(tmp_path / "rootfs")
    (rootfs / "usr/bin/python3.11").write_bytes(X86_64)
    config = good()
    config["env"] = [{"name": PLATFORM_ENV, "settable": [], "value": "linux/amd64"}]
    (tmp_path / "config.json").write_text(json.dumps(config))
    argv = ["--project", str(tmp_path / "none.toml"), "--bundle", str(tmp_path), "validate"]
    assert cli(*argv)[0] == 0
    config["env"][0]["value"] = "linux/arm64"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert cli(*argv) == (
        1,
        [
            f"==> validate {tmp_path}",
            f"error: {tmp_path}/config.json: env PLUGIN_PLATFORM says linux/arm64 but the rootfs "
            "is for linux/amd64 (rebuild the bundle)",
        ],
    )


def test_plugin_for_another_architecture_is_refused_before_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plugin.bundle._engine as engine_module
    from tests.unit.test_bundle_engine import FakeClient

    client = FakeClient()
    monkeypatch.setattr(engine_module, "docker_client", lambda timeout=600: client)
    (tmp_path / "plugin.toml").write_text(
        '[plugin]\nname = "acme/vol"\ndrivers = ["a.b:C"]\nsocket = "t.sock"\n'
    )
    code, lines = cli("--project", str(tmp_path / "plugin.toml"), "--arch", "arm64", "plugin")
    assert (code, lines) == (
        1,
        [
            "error: plugin --arch arm64: this daemon runs linux/amd64, so the plugin could not be "
            "enabled here; build it (--arch arm64 build) and publish it (push TAG...)"
        ],
    )


def test_the_base_library_is_compiled_by_this_host_when_it_runs_the_same_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setattr(foreign, "SUITE_PYTHON", sys.version_info[:2])
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    compiled = foreign._hooks()
    assert compiled[:-1] == list(foreign.HOOKS)
    assert compiled[-1].endswith(
        f' -m compileall -q -j 0 -s "$1" -p / "$1/usr/lib/python{version}" '
        '"$1/usr/lib/python3/dist-packages" >/dev/null'
    )
    key = foreign._recipe_key(foreign.base_recipe(get_arch("arm64")))
    monkeypatch.setattr(foreign, "SUITE_PYTHON", (2, 7))
    assert foreign._hooks() == list(foreign.HOOKS)  # another version's bytecode: none
    assert foreign._recipe_key(foreign.base_recipe(get_arch("arm64"))) != key

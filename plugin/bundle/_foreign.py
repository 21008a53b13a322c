"""Building for another architecture on this host: emulation, and a base
image made from Debian's packages for that architecture.

The Dockerfile's ``RUN`` steps and the slim step run the plugin's own
programs, so an arm64 build on an amd64 host runs arm64 programs: the kernel
hands them to Debian's ``qemu-user-static`` through ``binfmt_misc``,
registered with the ``F`` flag (the emulator is opened once, at registration,
so it also works inside containers, which do not have it in their rootfs).

The base image is Debian's ``python3`` and ``pip`` for that architecture,
unpacked (``mmdebstrap --variant=extract``): nothing of the target
architecture runs to make it, and only Python, pip, a shell and coreutils are
downloaded (about 30 MB, 10 s), against a whole minimal system configured
under emulation for ``debootstrap`` (its second stage alone takes minutes).
The packages are not configured: enough for the kit's Dockerfile, which
installs the plugin's wheels with pip; a Dockerfile that runs ``apt-get``
needs a base of its own for that architecture (``build.base_image`` as
``<image>-<arch>``, made beforehand). The image is labelled with a digest of
its recipe and made again only when the recipe changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import BuildError
from ._platform import Arch

__all__ = ["BASE_LABEL", "base_recipe", "ensure_emulation", "make_base_image"]

Report = Callable[[str], None]

SUITE = "bookworm"
#: What the kit's Dockerfile needs: python3 and pip (the wheelhouse install),
#: a shell and rm for RUN; base-passwd for /etc/passwd and /etc/group.
PACKAGES = ("python3", "python3-pip", "dash", "coreutils", "base-passwd")
#: Run on the unpacked tree: the files the packages' scripts would have made,
#: and what no plugin reads.
HOOKS = (
    'cp "$1/usr/share/base-passwd/passwd.master" "$1/etc/passwd"',
    'cp "$1/usr/share/base-passwd/group.master" "$1/etc/group"',
    'rm -rf "$1/usr/share/doc" "$1/usr/share/man" "$1/usr/share/info" "$1/usr/share/locale"',
    'rm -rf "$1/var/lib/apt/lists" "$1/var/cache/apt"',
)
BASE_LABEL = "org.docker-plugin-kit.base-recipe"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: Where Debian's qemu-user-static keeps its binfmt registrations.
BINFMT_CONF = Path("/usr/lib/binfmt.d")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _apt_install(packages: list[str], why: str, report: Report) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BuildError(f"{why}: install Debian's {' '.join(packages)} (as root: apt-get install)")
    report(f"installing Debian's {' '.join(packages)} ({why})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise BuildError(f"{why}: apt-get install {' '.join(packages)} failed: {tail}")


# --- emulation -----------------------------------------------------------------------


def _binfmt_entry(arch: Arch, root: Path) -> Path:
    return root / f"qemu-{arch.machine}"


def _binfmt_flags(entry: Path) -> tuple[bool, str] | None:
    try:
        text = entry.read_text()
    except OSError:
        return None
    enabled = text.splitlines()[0].strip() == "enabled" if text else False
    flags = re.search(r"^flags: *(\S*)", text, re.MULTILINE)
    return enabled, flags.group(1) if flags else ""


def ensure_emulation(arch: Arch, report: Report, binfmt: Path = BINFMT) -> str:
    """Make sure this host runs ``arch`` programs, in containers too; returns
    how (for the build log). Registers Debian's qemu-user-static with the
    kernel when it is not yet, installing it first when it is missing."""
    entry = _binfmt_entry(arch, binfmt)
    state = _binfmt_flags(entry)
    if state is None:
        if not (binfmt / "register").exists():
            _mount_binfmt(binfmt)
        conf = BINFMT_CONF / f"qemu-{arch.machine}.conf"
        if not conf.exists():
            _apt_install(["qemu-user-static"], f"running {arch.name} programs", report)
        if not conf.exists():
            raise BuildError(f"{conf} is missing: qemu-user-static does not emulate {arch.name}")
        try:
            (binfmt / "register").write_text(conf.read_text().strip() + "\n")
        except OSError as exc:
            if _binfmt_flags(entry) is None:  # not a race with another build
                raise BuildError(
                    f"cannot register the {arch.name} emulator with the kernel "
                    f"({exc.strerror}); as root: cat {conf} > {binfmt}/register"
                ) from None
        report(f"registered {conf.name} with the kernel (binfmt_misc)")
        state = _binfmt_flags(entry)
    if state is None:
        raise BuildError(f"{entry} did not appear after registering the {arch.name} emulator")
    enabled, flags = state
    if not enabled:
        raise BuildError(
            f"the {arch.name} emulator is registered but disabled ({entry}); "
            f"enable it: echo 1 > {entry}"
        )
    if "F" not in flags:
        raise BuildError(
            f"the {arch.name} emulator is registered without the F flag ({entry}: flags {flags}), "
            "so containers cannot find it; register Debian's qemu-user-static instead: "
            f"echo -1 > {entry}; cat {BINFMT_CONF}/qemu-{arch.machine}.conf > {binfmt}/register"
        )
    return f"{arch.name} programs run under {entry.name} (flags {flags})"


def _mount_binfmt(binfmt: Path) -> None:
    proc = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True, text=True
    )
    if proc.returncode != 0 and not (binfmt / "register").exists():
        raise BuildError(
            f"binfmt_misc is not mounted and cannot be ({proc.stderr.strip()}); as root: "
            f"mount -t binfmt_misc binfmt_misc {binfmt}"
        )


# --- the base image -------------------------------------------------------------------


def _mirror(root: Path = Path("/")) -> str | None:
    """The Debian archive this host's apt uses (deb822 or one-line sources)."""
    apt = root / "etc/apt"
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if ":" in line and line[:1] != "#"
            )
            uris = fields.get("URIs", "").split()
            suites = fields.get("Suites", "").split()
            if uris and SUITE in suites and "security" not in uris[0]:
                return uris[0]
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in words[1]:
                return next((w for w in words[1:] if "://" in w), None)
    return None


#: The suite's Python: bytecode is the same on every architecture, so this
#: host compiles it when it runs the same version.
SUITE_PYTHON = (3, 11)


def _hooks() -> list[str]:
    """The extract hooks: HOOKS, then the Python library compiled to
    bytecode by this host's Python when it is the suite's version. Debian
    compiles it when a package is configured, which the extract variant
    skips; under emulation every start would compile it again (pip's
    start: 10 s instead of 2 s)."""
    hooks = list(HOOKS)
    if sys.version_info[:2] == SUITE_PYTHON:
        version = ".".join(map(str, SUITE_PYTHON))
        hooks.append(
            f'{shlex.quote(sys.executable)} -m compileall -q -j 0 -s "$1" -p / '
            f'"$1/usr/lib/python{version}" "$1/usr/lib/python3/dist-packages" >/dev/null'
        )
    return hooks


def base_recipe(arch: Arch) -> dict[str, Any]:
    """What the base image is made from; its digest labels the image."""
    hooks = [h.replace(shlex.quote(sys.executable), "python3") for h in _hooks()]
    return {"suite": SUITE, "arch": arch.debian, "packages": list(PACKAGES), "hooks": hooks}


def _recipe_key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def make_base_image(client: Any, tag: str, arch: Arch, report: Report) -> str:
    """``tag``: Debian's Python for ``arch``, made unless an image of that
    tag was made from the same recipe. Returns the image ID."""
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    key = _recipe_key(base_recipe(arch))
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        image = None
    if image is not None:
        labels = (image.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(BASE_LABEL) == key and image.attrs.get("Architecture") == arch.name:
            report(f"{tag} is up to date (recipe {key})")
            return str(image.id)
        report(f"{tag} was made from another recipe; making it again")
    if shutil.which("mmdebstrap") is None:
        _apt_install(["mmdebstrap"], f"making a {arch.name} base image", report)
    with tempfile.TemporaryDirectory(prefix="dpk-base-", dir="/var/tmp") as tmp:
        layer = Path(tmp) / "layer.tar"
        _unpack_packages(arch, layer, report)
        report(f"loading {tag} ({layer.stat().st_size / 1e6:.0f} MB)")
        image_id = _load(client, layer, tag, arch, key)
    return image_id


def _unpack_packages(arch: Arch, out: Path, report: Report) -> None:
    mirror = _mirror()
    cmd = [
        "mmdebstrap",
        "--quiet",
        "--mode=root",
        "--variant=extract",
        f"--architectures={arch.debian}",
        f"--include={','.join(PACKAGES)}",
        *(f"--extract-hook={hook}" for hook in _hooks()),
        SUITE,
        str(out),
    ]
    if mirror:
        cmd.append(mirror)
    report(f"unpacking Debian {SUITE}'s {' '.join(PACKAGES[:2])} for {arch.debian}")
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not out.exists():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise BuildError(f"mmdebstrap failed for {arch.debian}: {tail}")


def _load(client: Any, layer: Path, tag: str, arch: Arch, key: str) -> str:
    """``docker load`` of a one-layer image with the architecture set (which
    ``docker import`` leaves at the daemon's own on Docker 20.10)."""
    digest = hashlib.sha256()
    with open(layer, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    config = {
        "architecture": arch.name,
        "os": "linux",
        "config": {
            "Env": [f"PATH={_PATH}", "LANG=C.UTF-8"],
            "Cmd": ["/usr/bin/python3"],
            "Labels": {BASE_LABEL: key},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
        "history": [{"created_by": f"docker-plugin-kit: Debian {SUITE} python3 for {arch.debian}"}],
    }
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}])
    archive = layer.with_name("image.tar")
    with tarfile.open(archive, "w") as tf:
        for name, data in ((config_name, config_bytes), ("manifest.json", manifest.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        tf.add(layer, "layer.tar")
    layer.unlink()
    with open(archive, "rb") as f:
        for item in client.api.load_image(f):
            if isinstance(item, dict) and item.get("error"):
                raise BuildError(f"docker load of {tag}: {item['error']}")
    return str(client.images.get(tag).id)


def foreign_base_image(
    client: Any, base_image: str, fallback: str, arch: Arch, report: Report
) -> str:
    """The base to build FROM for ``arch``: ``<base_image>-<arch>`` when this
    host has it; ``<fallback>-<arch>`` when it was made here before (from
    Debian's packages); else ``base_image`` pulled for that platform and
    tagged ``<base_image>-<arch>``; else ``<fallback>-<arch>``, made."""
    own = f"{base_image}-{arch.name}"
    image = _get(client, own)
    if image is not None:
        found = image.attrs.get("Architecture")
        if found != arch.name:
            raise BuildError(f"base image {own} is for {found}, not {arch.name}")
        return own
    tag = f"{fallback}-{arch.name}"
    made = _get(client, tag)
    if made is None and _pull_for(client, base_image, own, arch, report):
        return own
    report(f"using {tag} (made from Debian's packages)")
    make_base_image(client, tag, arch, report)
    return tag


def _get(client: Any, name: str) -> Any | None:
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def _split(name: str) -> tuple[str, str]:
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return repo, tag


def _pull_for(client: Any, base_image: str, own: str, arch: Arch, report: Report) -> bool:
    """Pull ``base_image`` for ``arch``'s platform and tag it ``own``. The
    daemon moves the plain tag to what it pulled: it is put back."""
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    repo, tag = _split(base_image)
    before = _get(client, base_image)
    report(f"pulling {base_image} for {arch.platform}")
    try:
        image = client.images.pull(repo, tag=tag, platform=arch.platform)
    except docker.errors.APIError as exc:
        reason = str(getattr(exc, "explanation", None) or exc).splitlines()[0][:200]
        report(f"{base_image} for {arch.platform} cannot be pulled ({reason})")
        return False
    try:
        found = image.attrs.get("Architecture")
        if found != arch.name:
            report(f"{base_image} pulled for {arch.platform} is for {found}: not used")
            return False
        own_repo, own_tag = _split(own)
        image.tag(own_repo, own_tag)
        return True
    finally:
        if before is not None:
            client.api.tag(before.id, repo, tag)
        elif image.id != getattr(_get(client, base_image), "id", None):
            pass  # the tag points elsewhere already
        else:
            client.api.remove_image(base_image, noprune=True)

"""The builder's tar streams on the host: packing a bundle for the daemon
(with tar, or tarfile when there is none) and unpacking a rootfs."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugin.bundle._engine import _pack_python, _pack_tar
from plugin.bundle._errors import BuildError, EngineError
from plugin.bundle._rootfs import unpack

TAR = shutil.which("tar")
# A tar that says a lot before doing its job: 256 KiB of warnings, four
# times what a pipe holds.
CHATTY = """#!/bin/sh
noise=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
i=0
while [ $i -lt 2048 ]; do
  echo "tar: warning $i: 120 characters of noise $noise" >&2
  i=$((i+1))
done
exec {tar} "$@"
"""


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test if it has not returned after ``seconds``."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: it hangs"
    if errors:
        raise errors[0]
    return out[0]


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, Path]:
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    (rootfs / "opt" / "plugin").mkdir(parents=True)
    (rootfs / "opt" / "plugin" / "big.bin").write_bytes(os.urandom(3 << 20))
    (rootfs / "run" / "docker" / "plugins").mkdir(parents=True)
    (rootfs / "bin").mkdir()
    (rootfs / "bin" / "run.sh").write_text("#!/bin/sh\n")
    (rootfs / "bin" / "run.sh").chmod(0o755)
    os.symlink("run.sh", rootfs / "bin" / "link")
    (bundle / "config.json").write_text("{}")
    ref = tmp_path / "refs" / ".plugin-ref"
    ref.parent.mkdir()
    ref.write_text("acme/p:1\n")
    return bundle, ref


def members(stream: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(stream)) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_tarfile_streams_the_bundle_in_pieces(bundle: tuple[Path, Path]) -> None:
    path, ref = bundle
    pieces = list(_pack_python(path / "config.json", path / "rootfs", ref))
    assert len(pieces) > 100 and max(len(p) for p in pieces) <= 1 << 16  # never whole
    got = members(b"".join(pieces))
    assert got["rootfs/opt/plugin/big.bin"].size == 3 << 20
    assert got["rootfs/.plugin-ref"].isfile() and got["config.json"].isfile()
    assert got["rootfs/bin/link"].issym() and got["rootfs/bin/link"].linkname == "run.sh"
    assert stat.S_IMODE(got["rootfs/bin/run.sh"].mode) == 0o755


def test_tarfile_stops_when_the_reader_stops(bundle: tuple[Path, Path]) -> None:
    path, ref = bundle
    stream = _pack_python(path / "config.json", path / "rootfs", ref)
    assert next(stream)
    within(30, stream.close)  # the thread making it ends too
    assert not [t for t in threading.enumerate() if t.name == "pack-bundle"]


def test_tarfile_errors_are_engine_errors(bundle: tuple[Path, Path]) -> None:
    path, ref = bundle
    with pytest.raises(EngineError) as failed:
        list(_pack_python(path / "config.json", path / "nosuch", ref))
    assert str(failed.value) == (
        f"packing {path} failed: [Errno 2] No such file or directory: '{path / 'nosuch'}'"
    )


@pytest.mark.skipif(TAR is None, reason="no tar on this host")
def test_tar_with_many_warnings_packs_and_unpacks_without_hanging(
    bundle: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ref = bundle
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    chatty = bin_dir / "tar"
    chatty.write_text(CHATTY.format(tar=TAR))
    chatty.chmod(0o755)
    packed = within(60, lambda: b"".join(_pack_tar(str(chatty), path, ref)))
    assert members(packed)["rootfs/opt/plugin/big.bin"].size == 3 << 20
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    dest = tmp_path / "out"
    total = within(60, lambda: unpack(io.BytesIO(packed), dest))
    assert total == len(packed)
    assert (dest / "rootfs" / "opt" / "plugin" / "big.bin").stat().st_size == 3 << 20
    assert (dest / "rootfs" / ".plugin-ref").read_text() == "acme/p:1\n"


@pytest.mark.skipif(TAR is None, reason="no tar on this host")
def test_tar_failures_say_what_tar_said(bundle: tuple[Path, Path], tmp_path: Path) -> None:
    path, _ = bundle
    with pytest.raises(EngineError) as failed:
        list(_pack_tar(str(TAR), path, tmp_path / "nosuch"))
    assert str(failed.value) == (
        f"packing {path} failed: {TAR}: nosuch: Cannot stat: No such file or directory\n"
        f"{TAR}: Exiting with failure status due to previous errors"
    )
    with pytest.raises(BuildError) as info:
        unpack(io.BytesIO(b"not a tar at all" * 100), tmp_path / "out")
    assert str(info.value).startswith(
        f"unpacking the rootfs failed: {TAR}: This does not look like a tar archive"
    )

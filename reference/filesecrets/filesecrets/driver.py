"""filesecrets: Swarm secrets whose values are files in a host directory.

The directory is mounted read-only into the plugin (``secrets.source``,
``/etc/docker/filesecrets`` unless set otherwise). A secret made with::

    docker secret create --driver filesecrets --label filesecrets.path=db/password db -

(the value given to ``create`` is ignored: ``-`` with an empty stdin will do)
gets the content of ``<secrets.source>/db/password`` for each task that uses
it; without the label, the file is named as the secret. Its labels:

``filesecrets.path``
    the file, relative to the secrets directory; no ``..``, no absolute path,
    and no symbolic link on the way (so a link cannot reach out of it). It
    may name the task's own file: ``{slot}`` is the task's replica number
    (``certs/web-{slot}.pem``), ``{service}`` its service, ``{node}`` its
    node's ID; each task then gets its own value.
``filesecrets.reuse``
    ``true``: Swarm may give one value to every task of a node (the default
    for a path without ``{...}``); ``false``: it asks again for each task and
    keeps each task's value apart (``DoNotReuse``; the default for a path
    with ``{...}``).

Values never reach the plugin's log, its settings or ``docker plugin
inspect``: they are files the host's administrator owns. Each request is
logged with the secret's name, its file, the task and the value's size; a
refusal (no such file, say) is logged as a warning, since Swarm only tells
the user "secret ... not found".
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from plugin import Mount, PluginError
from plugin.secrets import GetSecretRequest, GetSecretResponse, SecretProvider

__all__ = ["MAX_SIZE", "PATH_LABEL", "REUSE_LABEL", "SECRETS", "FileSecrets"]

log = logging.getLogger("filesecrets")

SECRETS = Mount(
    "secrets",
    destination="/secrets",
    source="/etc/docker/filesecrets",
    description="host directory holding the secrets' files, mounted read-only "
    "(docker plugin set PLUGIN secrets.source=/path)",
    options=("rbind", "ro"),
)
PATH_LABEL = "filesecrets.path"
REUSE_LABEL = "filesecrets.reuse"
#: Swarm refuses a secret of 500 KiB or more.
MAX_SIZE = 500 * 1024 - 1

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class FileSecrets(SecretProvider):
    """Serves each secret from a file of the secrets directory.

    ``FileSecrets()`` reads the plugin's own mount; tests pass ``root``.
    """

    mounts = (SECRETS,)

    def __init__(self, root: str | None = None) -> None:
        self.root = os.fspath(root or SECRETS.destination)

    def get_secret(self, req: GetSecretRequest) -> GetSecretResponse:
        try:
            return self._get(req)
        except PluginError as exc:
            # Swarm keeps this message to its debug log and fails the task
            # with "secret ... not found": say it where the operator looks.
            log.warning(
                "task %s of service %s: %s", req.task_name or "?", req.service_name or "?", exc
            )
            raise

    def _get(self, req: GetSecretRequest) -> GetSecretResponse:
        labels = req.secret_labels
        template = labels.get(PATH_LABEL) or req.secret_name
        where = f"secret {req.secret_name!r}"
        relative = _fill(template, req, where)
        parts = _parts(relative, where)
        per_task = relative != template
        reuse = labels.get(REUSE_LABEL, "false" if per_task else "true")
        if reuse not in ("true", "false"):
            raise PluginError(f"{where}: label {REUSE_LABEL} must be true or false, not {reuse!r}")
        value = self._read(parts, where)
        log.info(
            "secret %r from %s for task %s of service %s: %d bytes%s",
            req.secret_name,
            "/".join(parts),
            req.task_name or req.task_id or "?",
            req.service_name or "?",
            len(value),
            ", not reused" if reuse == "false" else "",
        )
        return GetSecretResponse(value, do_not_reuse=reuse == "false")

    def _read(self, parts: list[str], where: str) -> bytes:
        shown = "/".join(parts)
        fd = dir_fd = -1
        try:
            dir_fd = os.open(self.root, _DIR)
        except OSError as exc:
            raise PluginError(
                f"{where}: the secrets directory {self.root} cannot be opened: {exc.strerror}"
            ) from None
        try:
            for part in parts[:-1]:
                next_fd = os.open(part, _DIR, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = next_fd
            fd = os.open(parts[-1], _FILE, dir_fd=dir_fd)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PluginError(f"{where}: {shown} is not a regular file")
            if st.st_size > MAX_SIZE:
                raise PluginError(
                    f"{where}: {shown} is {st.st_size} bytes; Swarm takes secrets under "
                    f"{MAX_SIZE + 1} bytes"
                )
            with os.fdopen(fd, "rb") as f:
                fd = -1  # closed with f
                value = f.read(MAX_SIZE + 1)
        except OSError as exc:
            raise PluginError(f"{where}: {_why(exc, shown)}") from None
        finally:
            for opened in (fd, dir_fd):
                if opened >= 0:
                    os.close(opened)
        if not value:
            raise PluginError(f"{where}: {shown} is empty (Swarm refuses an empty secret)")
        if len(value) > MAX_SIZE:
            raise PluginError(f"{where}: {shown} grew over {MAX_SIZE} bytes while being read")
        return value


_FIELDS = ("slot", "service", "node")


def _fill(template: str, req: GetSecretRequest, where: str) -> str:
    """The path with ``{slot}``, ``{service}`` and ``{node}`` filled in."""
    if "{" not in template and "}" not in template:
        return template
    # The task name is <service>.<slot>.<task ID> (<service>.<node ID>.<task
    # ID> for a global service).
    values = {
        "slot": req.task_name.rsplit(".", 2)[1] if req.task_name.count(".") >= 2 else "",
        "service": req.service_name,
        "node": req.node_id,
    }
    out = []
    rest = template
    while rest:
        start = rest.find("{")
        end = rest.find("}", start + 1)
        if start < 0 or end < 0 or "}" in rest[:start]:
            raise PluginError(f"{where}: {template!r}: unbalanced braces")
        field = rest[start + 1 : end]
        if field not in values:
            known = ", ".join("{" + f + "}" for f in _FIELDS)
            raise PluginError(f"{where}: {template!r}: unknown field {{{field}}} (known: {known})")
        if not values[field]:
            raise PluginError(f"{where}: {template!r}: the request has no {field}")
        out += [rest[:start], values[field]]
        rest = rest[end + 1 :]
        if "{" not in rest and "}" not in rest:
            out.append(rest)
            break
    return "".join(out)


def _parts(relative: str, where: str) -> list[str]:
    if not relative:
        raise PluginError(f"{where}: no file name (give the secret a name or {PATH_LABEL})")
    parts = relative.split("/")
    bad = relative.startswith("/") or "\0" in relative or any(p in ("", ".", "..") for p in parts)
    if bad:
        raise PluginError(
            f"{where}: {relative!r} is not a path inside the secrets directory (a relative "
            "path without '.', '..' or empty parts)"
        )
    return parts


def _why(exc: OSError, shown: str) -> str:
    if exc.errno == errno.ENOENT:
        return (
            f"no file {shown} in the secrets directory (create it on the host's "
            f"secrets.source, or label the secret {PATH_LABEL}=PATH)"
        )
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return f"{shown}: a symbolic link or a file is in the way (links are not followed)"
    return f"cannot read {shown}: {exc.strerror}"

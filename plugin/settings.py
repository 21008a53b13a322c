"""Typed per-host settings: declared once by the driver, set per host with
``docker plugin set``, parsed and checked when the plugin starts.

A driver declares its settings as a ``Settings`` class, one attribute each,
and names it in its ``settings`` class attribute::

    from plugin import settings

    class TmpSettings(settings.Settings):
        default_size = settings.size("64m", "size of a volume created without -o size")
        max_volumes = settings.integer(100, "volumes at most", minimum=1)
        sync = settings.boolean(False, "fsync every write")
        root = settings.path("/mnt/volumes", "where volumes are mounted")
        flavour = settings.choice(["fast", "safe"], "safe", "how to mount")
        token = settings.string(None, "API token")      # no default: must be set

    class TmpVolumes(VolumeDriver):
        settings = TmpSettings

        def __init__(self) -> None:
            self.config = TmpSettings.from_env()
            # self.config.default_size is an int (bytes), .sync a bool, ...

The environment variable of a setting is its attribute name in upper case
(``DEFAULT_SIZE``; ``name=`` chooses another). The builder renders each
setting as an ``env`` entry of ``config.json`` (default as the value, type
and description as its description), so ``docker plugin inspect`` shows it
and ``docker plugin set PLUGIN DEFAULT_SIZE=16m`` changes it. When the plugin
starts (``python -m plugin``), every driver's settings are parsed before any
driver is made: a bad value stops start-up with one line naming the setting
and its value, which ``docker-plugin-kit enable`` shows as the reason enable
failed. A setting missing from the environment gets its declared default
(the daemon does not add the defaults of settings new in an upgraded
version). A setting without a default must be set on each host before enable.

Types: ``string`` (any text), ``integer`` (optionally bounded), ``boolean``
(true/false, yes/no, on/off, 1/0), ``size`` (bytes, or a whole number with
k, m, g, t: binary units, ``64m`` = 64 MiB; parsed to an int), ``path`` (an
absolute path, normalized) and ``choice`` (one of a list, any letter case;
parsed to the declared spelling).

This module is imported inside the plugin: it has no dependencies.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar, overload

from .manifest import Env

__all__ = [
    "Setting",
    "Settings",
    "SettingsError",
    "boolean",
    "check",
    "choice",
    "integer",
    "path",
    "size",
    "string",
]

T = TypeVar("T")
S = TypeVar("S", bound="Settings")


class SettingsError(ValueError):
    """Bad per-host settings: ``problems`` has one line per setting. A
    ValueError, so that ``python -m plugin`` reports it in one line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class Setting(Generic[T]):
    """One typed setting (made by ``string()``, ``integer()``, ...): on a
    ``Settings`` instance the attribute is the parsed value."""

    def __init__(
        self,
        kind: str,
        parse: Callable[[str], T],
        show: Callable[[T], str],
        hint: str,
        detail: str,
        default: T | str | None,
        description: str,
        name: str | None,
        settable: bool,
    ) -> None:
        self.kind = kind
        #: What a value must be ("a size"), and more about it ("bytes, or ...").
        self.hint = hint
        self.detail = detail
        self.description = description
        self.name = name or ""
        self.attr = ""
        self.settable = settable
        self._parse = parse
        #: The default as config.json holds it (None: must be set per host).
        self.value: str | None = None
        #: The default, parsed.
        self.default: T | None = None
        if default is not None:
            text = default if isinstance(default, str) else show(default)
            try:
                self.default = parse(text)
            except ValueError:
                raise ValueError(
                    f"default {text!r} of a {kind} setting is not {self._what()}"
                ) from None
            self.value = text

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr
        if not self.name:
            self.name = attr.upper()

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[T]: ...
    @overload
    def __get__(self, obj: Settings, owner: type) -> T: ...
    def __get__(self, obj: Settings | None, owner: type) -> Setting[T] | T:
        if obj is None:
            return self
        value: T = obj._values[self.attr]
        return value

    @property
    def required(self) -> bool:
        return self.value is None

    def _what(self) -> str:
        return f"{self.hint} ({self.detail})" if self.detail else self.hint

    def parse(self, environ: Mapping[str, str]) -> T:
        """This setting's value in ``environ`` (its default when missing);
        ValueError naming the setting and the value when it is bad."""
        raw = environ.get(self.name)
        if raw is None:
            if self.default is None:
                raise ValueError(
                    f"setting {self.name} is not set ({self.hint}, no default); set it with "
                    f"docker plugin set PLUGIN {self.name}=VALUE"
                )
            return self.default
        try:
            return self._parse(raw)
        except ValueError:
            raise ValueError(
                f"bad setting {self.name}={_quote(raw)}: not {self._what()}; change it with "
                f"docker plugin set PLUGIN {self.name}=VALUE"
            ) from None

    def env(self) -> Env:
        """This setting as an ``env`` entry of config.json."""
        what = f"{self.hint}: {self.detail}" if self.detail else self.hint
        if self.required:
            what += ", required (no default)"
        if self.description:
            what = f"{self.description}; {what}"
        return Env(self.name, self.value, what, self.settable)

    def __repr__(self) -> str:
        return f"<{self.kind} setting {self.name or self.attr} default={self.value!r}>"


class Settings:
    """Base of a driver's settings declaration (see the module's docstring).
    Instances hold parsed values, one attribute per setting."""

    _declared: ClassVar[tuple[Setting[Any], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: dict[str, Setting[Any]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Setting):
                    declared[attr] = value
        names: dict[str, str] = {}
        for attr, setting in declared.items():
            if not _ENV_NAME.fullmatch(setting.name):
                raise ValueError(
                    f"{cls.__name__}.{attr}: {setting.name!r} cannot be an environment variable "
                    "that docker plugin set can change (letters, digits and _, not starting "
                    "with a digit)"
                )
            if setting.name in names:
                raise ValueError(
                    f"{cls.__name__}: {names[setting.name]} and {attr} are both "
                    f"named {setting.name}"
                )
            names[setting.name] = attr
        cls._declared = tuple(declared.values())

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    @classmethod
    def declared(cls) -> tuple[Setting[Any], ...]:
        """The settings, in declaration order (a base class's first)."""
        return cls._declared

    @classmethod
    def parse(cls: type[S], environ: Mapping[str, str]) -> S:
        """Parsed values from ``environ``; SettingsError naming every bad or
        missing setting."""
        values: dict[str, Any] = {}
        problems = []
        for setting in cls._declared:
            try:
                values[setting.attr] = setting.parse(environ)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise SettingsError(problems)
        return cls(values)

    @classmethod
    def from_env(cls: type[S]) -> S:
        """Parsed values from this process's environment (what the daemon
        sets from ``docker plugin set``)."""
        return cls.parse(os.environ)

    @classmethod
    def env(cls) -> tuple[Env, ...]:
        """The ``env`` entries of config.json these settings render."""
        return tuple(s.env() for s in cls._declared)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Settings)
            and type(other) is type(self)
            and (other._values == self._values)
        )

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"{type(self).__name__}({inner})"


def check(classes: Iterable[type[Settings]], environ: Mapping[str, str]) -> None:
    """Parse every class of ``classes`` once; SettingsError listing every
    problem of all of them (what start-up runs before making the drivers)."""
    problems: list[str] = []
    seen: set[type[Settings]] = set()
    for cls in classes:
        if cls in seen:
            continue
        seen.add(cls)
        try:
            cls.parse(environ)
        except SettingsError as exc:
            problems += [p for p in exc.problems if p not in problems]
    if problems:
        raise SettingsError(problems)


# --- the types ----------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SIZE = re.compile(r"([0-9]+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _quote(text: str) -> str:
    """``text`` in double quotes, cut to 64 characters."""
    shown = text if len(text) <= 64 else text[:64] + "..."
    return '"' + shown.replace("\\", "\\\\").replace('"', '\\"') + '"'


def string(
    default: str | None = None,
    description: str = "",
    *,
    name: str | None = None,
    settable: bool = True,
) -> Setting[str]:
    """Any text."""
    return Setting("string", str, str, "text", "", default, description, name, settable)


def integer(
    default: int | None = None,
    description: str = "",
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    name: str | None = None,
    settable: bool = True,
) -> Setting[int]:
    """A whole number, within ``minimum`` and ``maximum`` when given."""
    if minimum is not None and maximum is not None:
        hint = f"an integer from {minimum} to {maximum}"
    elif minimum is not None:
        hint = f"an integer of at least {minimum}"
    elif maximum is not None:
        hint = f"an integer of at most {maximum}"
    else:
        hint = "an integer"

    def parse(text: str) -> int:
        text = text.strip()
        if not _INTEGER.fullmatch(text):
            raise ValueError(text)
        value = int(text)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ValueError(text)
        return value

    return Setting("integer", parse, str, hint, "", default, description, name, settable)


def boolean(
    default: bool | None = None,
    description: str = "",
    *,
    name: str | None = None,
    settable: bool = True,
) -> Setting[bool]:
    """true or false (also yes/no, on/off, 1/0; any letter case)."""

    def parse(text: str) -> bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(text)

    def show(value: bool) -> str:
        return "true" if value else "false"

    hint = "true or false"
    return Setting("boolean", parse, show, hint, "", default, description, name, settable)


def size(
    default: int | str | None = None,
    description: str = "",
    *,
    name: str | None = None,
    settable: bool = True,
) -> Setting[int]:
    """A number of bytes: ``1048576``, or a whole number with k, m, g or t
    (binary: ``64m`` is 64 MiB; ``64M``, ``64MB``, ``64MiB`` too)."""

    def parse(text: str) -> int:
        m = _SIZE.fullmatch(text.strip())
        if not m:
            raise ValueError(text)
        return int(m.group(1)) * _UNITS[m.group(2).lower()]

    detail = "bytes, or a whole number with k, m, g or t, such as 64m"
    return Setting("size", parse, str, "a size", detail, default, description, name, settable)


def path(
    default: str | None = None,
    description: str = "",
    *,
    name: str | None = None,
    settable: bool = True,
) -> Setting[str]:
    """An absolute path (in the plugin's filesystem), normalized."""

    def parse(text: str) -> str:
        if not text.startswith("/") or "\0" in text:
            raise ValueError(text)
        return "/" + posixpath.normpath(text).lstrip("/")

    hint = "an absolute path"
    return Setting("path", parse, str, hint, "", default, description, name, settable)


def choice(
    choices: Sequence[str],
    default: str | None = None,
    description: str = "",
    *,
    name: str | None = None,
    settable: bool = True,
) -> Setting[str]:
    """One of ``choices`` (any letter case; the value is the declared spelling)."""
    options = list(choices)
    if not options:
        raise ValueError("a choice setting needs at least one choice")
    by_lower = {c.lower(): c for c in options}

    def parse(text: str) -> str:
        try:
            return by_lower[text.strip().lower()]
        except KeyError:
            raise ValueError(text) from None

    hint = "one of " + ", ".join(options)
    return Setting("choice", parse, str, hint, "", default, description, name, settable)

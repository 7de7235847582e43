"""Workspace configuration: where the workspace is, what its config says, and which environment a run uses.

Owns: finding the workspace root (``-C DIR``, else the current folder or the nearest parent holding a
config), reading ``invoicesync.toml`` (keys at the top level) or ``[tool.invoicesync]`` in
``pyproject.toml``, checking every key, choosing the environment, and applying the overrides of the
process environment (``INVOICESYNC_ENV``, ``CAMPFIRE_BASE_URL``, and the variables named by
``api_key_env`` and the backend's ``dsn_env``). The result is a frozen :class:`Settings`.

Where each environment's state is kept is its :class:`BackendConfig`: the top-level ``[backend]``
table, with ``[environments.NAME.backend]`` overriding it key by key (DESIGN.md, "Team state on
PostgreSQL").

Never uses the network and never prints. Every problem is a :class:`~invoicesync.errors.ConfigError`
naming the file and key; neither the API key nor the database connection string ever appears in a
message or a ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from invoicesync.errors import ConfigError, did_you_mean
from invoicesync.urls import check_base_url

CONFIG_FILE = "invoicesync.toml"
PYPROJECT_FILE = "pyproject.toml"
DEFAULT_BASE_URL = "https://api.meetcampfire.com"
DEFAULT_API_KEY_ENV = "CAMPFIRE_API_KEY"
DEFAULT_ENVIRONMENT = "default"

ENV_ENVIRONMENT = "INVOICESYNC_ENV"
ENV_BASE_URL = "CAMPFIRE_BASE_URL"

_TOP_KEYS = ("specs", "state", "default_environment", "environments", "backend")
_ENV_KEYS = ("endpoint", "base_url", "api_key_env", "timeout", "settle", "vars", "var_files", "backend")
_BACKEND_KEYS = ("type", "dsn_env", "schema")
_BACKEND_TYPES = ("local", "postgres")
DEFAULT_DSN_ENV = "INVOICESYNC_PG_DSN"
DEFAULT_SCHEMA = "invoicesync"
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
DEFAULT_TIMEOUT = 60.0
DEFAULT_SETTLE = 120.0
_ENDPOINTS = ("sandbox", "http")
_ENV_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Endpoint = Literal["sandbox", "http"]
BackendType = Literal["local", "postgres"]


def _empty_vars() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class BackendConfig:
    """Where an environment's state, journal and lock are kept.

    ``local``: the files under the workspace's state folder. ``postgres``: tables in ``schema`` of
    the database whose connection string is in the variable named ``dsn_env`` (the string itself is
    never in a file: it holds a password).
    """

    type: BackendType = "local"
    dsn_env: str = DEFAULT_DSN_ENV
    schema: str = DEFAULT_SCHEMA


@dataclass(frozen=True)
class Environment:
    """One named target: the embedded sandbox, or a Campfire API reached over HTTP.

    ``vars`` are template variables (an immutable view) and ``var_files`` absolute paths of YAML
    files of more variables, read by :mod:`invoicesync.specs`.
    """

    name: str
    endpoint: Endpoint
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = DEFAULT_API_KEY_ENV
    vars: Mapping[str, Any] = field(default_factory=_empty_vars)
    var_files: tuple[Path, ...] = ()
    # Seconds to wait for Campfire's answer to one request (the read timeout).
    timeout: float = DEFAULT_TIMEOUT
    # Seconds after a create was sent during which it may still land at Campfire (behind a gateway
    # that gave up on it); None when the config does not say (see ``settle_window``).
    settle: float | None = None
    backend: BackendConfig = field(default_factory=BackendConfig)

    @property
    def settle_window(self) -> float:
        """The settle window in force: as configured, else none for the embedded sandbox, else 120 s.

        The embedded sandbox runs in this process and commits before it answers, so nothing it was
        sent can land later.
        """
        if self.settle is not None:
            return self.settle
        return 0.0 if self.endpoint == "sandbox" else DEFAULT_SETTLE


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about the workspace and the chosen environment."""

    root: Path
    specs_dir: Path
    state_dir: Path
    environment: Environment
    api_key: str | None = field(default=None, repr=False)
    config_file: Path | None = None
    environment_names: tuple[str, ...] = ()
    # The PostgreSQL connection string, from the variable the backend's dsn_env names (None when
    # unset or when the backend is local); it holds a password, so it is never shown.
    dsn: str | None = field(default=None, repr=False)

    def relative(self, path: Path) -> str:
        """``path`` relative to the workspace root, in ``/`` form, for messages (as given when outside it)."""
        try:
            return Path(os.path.abspath(path)).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def load_settings(
    root: Path | None = None,
    *,
    environment: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Find the workspace, read its config and resolve the environment of this run.

    ``root`` is ``-C DIR``; without it the current folder is used, or the nearest parent holding an
    ``invoicesync.toml`` or a ``pyproject.toml`` with ``[tool.invoicesync]`` when the current folder
    has neither. ``environment`` is ``-e NAME`` and beats ``INVOICESYNC_ENV``, which beats the
    config's ``default_environment``. ``environ`` defaults to ``os.environ``.

    Raises :class:`ConfigError` for a missing workspace folder, unreadable or invalid config, an
    unknown key (with a suggestion) or an environment the config does not define.
    """
    env_vars: Mapping[str, str] = os.environ if environ is None else environ
    workspace = _find_root(root)
    config_file, table, prefix = _read_config(workspace)
    where = config_file.name if config_file is not None else "configuration"

    _check_keys(table, _TOP_KEYS, where, prefix)
    backend = _backend(table.get("backend"), BackendConfig(), where, _key(prefix, "backend"))
    specs_dir = workspace / _path_value(table, "specs", "specs", where, prefix)
    state_dir = workspace / _path_value(table, "state", "state", where, prefix)

    envs_raw = table.get("environments", {})
    if not isinstance(envs_raw, dict):
        raise ConfigError(f"{where}: {_key(prefix, 'environments')} must be a table of environments")
    names = tuple(envs_raw)
    for name in names:
        if not _ENV_NAME_RE.match(name):
            raise ConfigError(
                f"{where}: environment name {name!r} is not valid: use letters, digits, '-', '_' and '.'"
            )

    default_env = table.get("default_environment")
    if default_env is not None:
        if not isinstance(default_env, str):
            raise ConfigError(f"{where}: {_key(prefix, 'default_environment')} must be a string")
        if default_env not in envs_raw:
            raise ConfigError(
                f"{where}: {_key(prefix, 'default_environment')} names environment {default_env!r}, "
                f"which is not defined; {_defined(names)}"
            )

    chosen = environment or env_vars.get(ENV_ENVIRONMENT) or default_env
    if chosen is None:
        if len(names) > 1:
            raise ConfigError(
                f"{where}: several environments are defined ({', '.join(names)}); choose one with "
                f"-e NAME or {ENV_ENVIRONMENT}, or set default_environment"
            )
        chosen = names[0] if names else DEFAULT_ENVIRONMENT

    if chosen in envs_raw:
        env = _environment(chosen, envs_raw[chosen], workspace, where, _key(prefix, f"environments.{chosen}"), backend)
    elif not names and chosen == DEFAULT_ENVIRONMENT:
        env = Environment(name=DEFAULT_ENVIRONMENT, endpoint="http", backend=backend)
    else:
        source = "-e" if environment else ENV_ENVIRONMENT
        raise ConfigError(f"environment {chosen!r} (from {source}) is not defined in {where}; {_defined(names)}")

    override_url = (env_vars.get(ENV_BASE_URL) or "").strip()
    if override_url:
        # CAMPFIRE_BASE_URL points any environment, the sandbox one included, at an HTTP server.
        env = dataclasses.replace(env, endpoint="http", base_url=check_base_url(override_url, ENV_BASE_URL))

    return Settings(
        root=workspace,
        specs_dir=specs_dir,
        state_dir=state_dir,
        environment=env,
        api_key=_api_key(env_vars, env.api_key_env),
        config_file=config_file,
        environment_names=names,
        dsn=_dsn(env_vars, env.backend),
    )


def load_all_settings(root: Path | None = None, *, environ: Mapping[str, str] | None = None) -> tuple[Settings, ...]:
    """The settings of every environment the config defines, in config order (the default one when none is).

    Raises :class:`ConfigError` as :func:`load_settings` does, for the first environment that has a problem.
    """
    workspace = _find_root(root)
    _file, table, _prefix = _read_config(workspace)
    envs = table.get("environments")
    names = tuple(envs) if isinstance(envs, dict) else ()
    if not names:
        return (load_settings(workspace, environ=environ),)
    return tuple(load_settings(workspace, environment=name, environ=environ) for name in names)


# --- finding and reading the config -----------------------------------------------------------------


def _find_root(root: Path | None) -> Path:
    if root is not None:
        path = Path(os.path.abspath(root))
        if not path.is_dir():
            raise ConfigError(f"workspace folder {str(root)!r} does not exist or is not a folder")
        return path
    cwd = Path(os.path.abspath(os.getcwd()))
    for candidate in (cwd, *cwd.parents):
        if _has_config(candidate):
            return candidate
    return cwd


def _has_config(folder: Path) -> bool:
    if (folder / CONFIG_FILE).is_file():
        return True
    pyproject = folder / PYPROJECT_FILE
    if not pyproject.is_file():
        return False
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    # A cheap check first: most pyproject.toml files on the way up have nothing of ours.
    if "tool.invoicesync" not in text and "invoicesync" not in text:
        return False
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    tool = data.get("tool")
    return isinstance(tool, dict) and "invoicesync" in tool


def _read_config(root: Path) -> tuple[Path | None, dict[str, Any], str]:
    """The config file, its invoicesync table, and the key prefix used in messages."""
    own = root / CONFIG_FILE
    pyproject = root / PYPROJECT_FILE
    own_table = _load_toml(own) if own.is_file() else None
    py_table: dict[str, Any] | None = None
    if pyproject.is_file():
        tool = _load_toml(pyproject).get("tool")
        if isinstance(tool, dict) and "invoicesync" in tool:
            value = tool["invoicesync"]
            if not isinstance(value, dict):
                raise ConfigError(f"{PYPROJECT_FILE}: [tool.invoicesync] must be a table")
            py_table = value
    if own_table is not None and py_table is not None:
        raise ConfigError(
            f"both {CONFIG_FILE} and [tool.invoicesync] in {PYPROJECT_FILE} configure this workspace "
            f"({root}); keep one of them"
        )
    if own_table is not None:
        return own, own_table, ""
    if py_table is not None:
        return pyproject, py_table, "tool.invoicesync"
    return None, {}, ""


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot be read: {exc}") from exc
    try:
        # Decimal, never float: vars may hold rates and prices.
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from exc


# --- checking values -----------------------------------------------------------------------------


def _key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _defined(names: Iterable[str]) -> str:
    listed = ", ".join(names)
    return f"defined environments: {listed}" if listed else "no environments are defined"


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {_key(prefix, key)!r}{did_you_mean(key, allowed)}; "
                f"allowed keys: {', '.join(allowed)}"
            )


def _path_value(table: Mapping[str, Any], key: str, default: str, where: str, prefix: str) -> Path:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {_key(prefix, key)} must be a folder path (a non-empty string)")
    return Path(value)


def _environment(name: str, raw: Any, root: Path, where: str, prefix: str, backend: BackendConfig) -> Environment:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix} must be a table")
    _check_keys(raw, _ENV_KEYS, where, prefix)

    base_url = raw.get("base_url")
    if base_url is not None:
        if not isinstance(base_url, str):
            raise ConfigError(f"{where}: {prefix}.base_url must be a string")
        base_url = check_base_url(base_url, f"{where}: {prefix}.base_url")

    endpoint = raw.get("endpoint", "http")
    if endpoint not in _ENDPOINTS:
        raise ConfigError(
            f"{where}: {prefix}.endpoint must be one of {', '.join(map(repr, _ENDPOINTS))}, got {endpoint!r}"
        )
    if endpoint == "sandbox" and base_url is not None:
        raise ConfigError(
            f"{where}: {prefix} sets both endpoint = \"sandbox\" and base_url; the embedded sandbox has no "
            "URL (drop base_url, or drop endpoint to use an HTTP server)"
        )

    api_key_env = raw.get("api_key_env", DEFAULT_API_KEY_ENV)
    if not isinstance(api_key_env, str) or not _VARIABLE_RE.match(api_key_env):
        raise ConfigError(
            f"{where}: {prefix}.api_key_env must be the name of an environment variable "
            "(the key itself never goes in a file)"
        )

    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, Decimal)) or not 0 < timeout <= 3600:
        raise ConfigError(f"{where}: {prefix}.timeout must be a number of seconds between 0 and 3600")

    settle = raw.get("settle")
    if settle is not None and (
        isinstance(settle, bool) or not isinstance(settle, (int, float, Decimal)) or not 0 <= settle <= 3600
    ):
        raise ConfigError(
            f"{where}: {prefix}.settle must be a number of seconds between 0 and 3600 (how long a create may "
            "still land at Campfire after its answer was lost; default 120)"
        )

    variables = raw.get("vars", {})
    if not isinstance(variables, dict):
        raise ConfigError(f"{where}: {prefix}.vars must be a table of template variables")

    var_files_raw = raw.get("var_files", [])
    if not isinstance(var_files_raw, list) or not all(isinstance(v, str) and v for v in var_files_raw):
        raise ConfigError(f"{where}: {prefix}.var_files must be a list of file paths")
    var_files = tuple(Path(os.path.abspath(root / v)) for v in var_files_raw)

    return Environment(
        name=name,
        endpoint="sandbox" if endpoint == "sandbox" else "http",
        base_url=base_url or DEFAULT_BASE_URL,
        api_key_env=api_key_env,
        vars=MappingProxyType(dict(variables)),
        var_files=var_files,
        timeout=float(timeout),
        settle=None if settle is None else float(settle),
        backend=_backend(raw.get("backend"), backend, where, f"{prefix}.backend"),
    )


def _backend(raw: Any, base: BackendConfig, where: str, key: str) -> BackendConfig:
    """``base`` with the keys of the ``raw`` backend table (absent: ``base`` as it is)."""
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise ConfigError(f'{where}: {key} must be a table (type = "local" or "postgres", dsn_env, schema)')
    _check_keys(raw, _BACKEND_KEYS, where, key)
    kind = raw.get("type", base.type)
    if kind not in _BACKEND_TYPES:
        hint = did_you_mean(kind, _BACKEND_TYPES) if isinstance(kind, str) else ""
        raise ConfigError(
            f"{where}: {key}.type must be one of {', '.join(map(repr, _BACKEND_TYPES))}, got {kind!r}{hint}"
        )
    dsn_env = raw.get("dsn_env", base.dsn_env)
    if not isinstance(dsn_env, str) or not _VARIABLE_RE.match(dsn_env):
        raise ConfigError(
            f"{where}: {key}.dsn_env must be the name of an environment variable (like {DEFAULT_DSN_ENV}); "
            "the connection string itself never goes in a file"
        )
    schema = raw.get("schema", base.schema)
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise ConfigError(
            f"{where}: {key}.schema must be a PostgreSQL schema name (letters, digits and '_', not starting "
            f"with a digit, at most 63 characters), got {schema!r}"
        )
    return BackendConfig(type="postgres" if kind == "postgres" else "local", dsn_env=dsn_env, schema=schema)


def _dsn(environ: Mapping[str, str], backend: BackendConfig) -> str | None:
    """The connection string from the variable ``dsn_env`` names, for a PostgreSQL backend; never shown."""
    if backend.type != "postgres":
        return None
    return (environ.get(backend.dsn_env) or "").strip() or None


def _api_key(environ: Mapping[str, str], name: str) -> str | None:
    """The API key from ``environ[name]``, surrounding white space removed; never shown in an error.

    A key with white space or control characters inside (a file with CRLF endings, a pasted line
    break) is refused here, before an HTTP library could echo it in a message of its own.
    """
    key = (environ.get(name) or "").strip()
    if not key:
        return None
    if not all(33 <= ord(ch) < 127 for ch in key):
        raise ConfigError(
            f"{name} holds characters an API key cannot have (white space, control or non-ASCII "
            f"characters); set it to the key alone. The value is not shown."
        )
    return key

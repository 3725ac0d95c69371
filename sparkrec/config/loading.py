"""Loading a config: YAML files (``extends:`` chains), ``--set key=value`` overrides, ``${ENV_VAR}``
references (secrets come from the environment, never from files in the repository), the type and
rule of every value, and absolute paths (executors and training ranks run in other working
directories)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from pathlib import Path
from string import Formatter
from typing import Any

import yaml

from sparkrec.config import secrets
from sparkrec.config.checks import ConfigError, check_finite, check_value
from sparkrec.config.settings import URI_SCHEME, Config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF = PROJECT_ROOT / "conf" / "local.yaml"


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, check every value and resolve paths.

    Args:
        path: YAML file; ``conf/local.yaml`` of the project when None.
        overrides: ``section.key=value`` strings; values are parsed as YAML scalars.

    Raises:
        ConfigError: a missing or unreadable file, unknown keys, values of the wrong type or outside
            their rule (the message names the key).
    """
    raw = _read_yaml(Path(path) if path else DEFAULT_CONF, ())
    for item in overrides or []:
        _apply_override(raw, item)
    return _checked(_expand_env(raw))


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """``config`` with ``values`` (nested mappings, as in a file) merged in key by key, checked like a file."""
    for section, entries in values.items():
        if not isinstance(entries, dict):
            raise ConfigError(f"{section} must be a mapping, got {entries!r}")
    return _checked(_merged(config.to_dict(), values))


def _checked(raw: dict[str, Any]) -> Config:
    config = _resolve_paths(_build(Config, raw, ""))
    check_config(config)
    secrets.remember_in(config.to_dict())
    return config


def keys_set_in(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The dotted keys (``train.ranker.labels``) a config file sets itself or through the files it
    extends, short of the project's defaults (``conf/local.yaml``): what the user chose."""

    def walk(raw: dict[str, Any], prefix: str) -> list[str]:
        return [
            key
            for name, value in raw.items()
            for key in (walk(value, f"{prefix}{name}.") if isinstance(value, dict) and value else [f"{prefix}{name}"])
        ]

    return tuple(sorted(walk(_read_yaml(Path(path), (), stop=DEFAULT_CONF.resolve()), "")))


def _read_yaml(conf_path: Path, seen: tuple[Path, ...], stop: Path | None = None) -> dict[str, Any]:
    """The file's mapping; with ``extends: other.yaml`` (relative to the file), merged over that file's
    (up to, not including, ``stop``)."""
    if stop is not None and conf_path.resolve() == stop:
        return {}
    if not conf_path.is_file():
        raise ConfigError(
            f"config file not found: {conf_path}"
            if not conf_path.exists()
            else f"config file {conf_path} is not a file"
        )
    try:
        raw = yaml.safe_load(conf_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        reason = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"config file {conf_path} is not valid YAML{line}: {reason}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {conf_path} must hold a mapping, got {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    base_path = (conf_path.parent / str(base)).resolve()
    if base_path in seen or base_path == conf_path.resolve():
        raise ConfigError(f"config files extend each other in a loop: {conf_path} -> {base_path}")
    return _merged(_read_yaml(base_path, (*seen, conf_path.resolve()), stop), raw)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def override_key(item: str) -> str:
    """The dotted key of a ``--set key=value`` item."""
    return item.partition("=")[0].strip()


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not override_key(item):
        raise ConfigError(f"--set expects key=value, got {item!r}")
    parts = override_key(item).split(".")
    # spark.conf keys contain dots themselves: spark.conf.spark.executor.memory=2g
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        raw.setdefault("spark", {}).setdefault("conf", {})[".".join(parts[2:])] = value
        return
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: {value!r} is not a YAML value") from err


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                if secrets.is_secret_name(name):
                    secrets.remember(os.environ[name])
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is referenced in the config but not set")

        return _ENV_REF.sub(repl, value)
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from ``raw``: every key known, every value of its type and
    within its rule."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + str(k) for k in unknown)}; known: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}{name}")
        rule = fields[name].metadata.get("rule")
        if rule is not None:
            check_value(rule, kwargs[name], f"{where}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the type ``hint`` names, or ``ConfigError`` naming ``where``."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where + ".")  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        _, value_type = typing.get_args(hint)
        return {str(k): _coerce(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item_type,) = typing.get_args(hint)
        return [_coerce(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_text(v, f"{where}[{i}]").strip() for i, v in enumerate(items))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint in (int, float):
        return _number(hint, value, where)
    if hint is str:
        return _text(value, where)
    raise ConfigError(f"{where}: settings of type {hint!r} are not supported")  # a new field's type


def _number(hint: type, value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    check_finite(float(value), where)
    if hint is int:
        if value != int(value):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _text(value: Any, where: str) -> str:
    """A text setting: text, or a number written without quotes (``4.4.0`` needs none; ``2`` is "2")."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise ConfigError(f"{where} must be text, got {value!r}")


def absolute_path(path: str) -> str:
    """Make a local path absolute; URIs with a scheme (s3a://, dbfs:/, abfss://) pass unchanged."""
    if not path or URI_SCHEME.match(path):
        return path
    return str(Path(path).expanduser().resolve())


def _absolute_tracking_uri(uri: str) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + absolute_path(uri[len(prefix) :])
    return uri


def _resolve_paths(config: Config) -> Config:
    return dataclasses.replace(
        config,
        lakehouse=dataclasses.replace(config.lakehouse, root=absolute_path(config.lakehouse.root)),
        landing=dataclasses.replace(config.landing, root=absolute_path(config.landing.root)),
        mlflow=dataclasses.replace(
            config.mlflow,
            tracking_uri=_absolute_tracking_uri(config.mlflow.tracking_uri),
            artifact_location=absolute_path(config.mlflow.artifact_location),
        ),
        embed=dataclasses.replace(config.embed, model_path=absolute_path(config.embed.model_path)),
        recommend=dataclasses.replace(config.recommend, exclude_file=absolute_path(config.recommend.exclude_file)),
        experiment=dataclasses.replace(config.experiment, root=absolute_path(config.experiment.root)),
        sql_server=dataclasses.replace(config.sql_server, state_dir=absolute_path(config.sql_server.state_dir)),
        train=dataclasses.replace(config.train, shared_root=absolute_path(config.train.shared_root)),
    )


# The ALS grid's keys and whether each takes whole numbers (models.baselines.AlsParams).
ALS_GRID_KEYS = {"rank": True, "reg_param": False, "alpha": False, "max_iter": True}


def check_config(config: Config) -> None:
    """The checks that read more than one setting, or know the tables' columns."""
    # Here, not at the top: the MLflow model imports the config and runs without Spark.
    from sparkrec.schemas import ITEMS_SCHEMA, TABLES

    columns = ITEMS_SCHEMA.fieldNames()
    try:
        placeholders = [name for _, name, _, _ in Formatter().parse(config.embed.template) if name]
    except ValueError as err:  # an unmatched brace
        raise ConfigError(f"embed.template {config.embed.template!r} is not a template: {err}") from err
    unknown = [f for f in (*config.embed.text_fields, *placeholders) if f not in columns]
    if unknown:
        raise ConfigError(
            f"embed.text_fields / embed.template name {', '.join(map(repr, unknown))}, which are not item "
            f"columns ({', '.join(columns)})"
        )
    for table in config.maintenance.zorder:
        if table not in TABLES:
            raise ConfigError(f"maintenance.zorder names {table!r}, which is not a table ({', '.join(TABLES)})")
    for name, values in config.experiment.als_grid.items():
        if name not in ALS_GRID_KEYS:
            raise ConfigError(f"experiment.als_grid has unknown key {name!r}; known: {', '.join(ALS_GRID_KEYS)}")
        if not values:
            raise ConfigError(f"experiment.als_grid.{name} needs at least one value")
        for value in values:
            whole = ALS_GRID_KEYS[name]
            if value < (1 if whole else 0) or (whole and value != int(value)):
                kind = "a whole number of at least 1" if whole else "at least 0"
                raise ConfigError(f"experiment.als_grid.{name} values must be {kind}, got {value!r}")
    landing = config.landing.root
    if URI_SCHEME.match(landing) and not landing.startswith("file:"):
        raise ConfigError(
            f"landing.root {landing}: the landing zone is listed as files, so it must be a path the driver "
            "mounts (a local disk, NFS, /dbfs, /Volumes, an s3fs/gcsfuse mount), not an object-store URI"
        )
    exclude = config.recommend.exclude_file
    if exclude and not Path(exclude).is_file():
        raise ConfigError(f"recommend.exclude_file {exclude} is not a file")
    model = config.embed.model_path
    if model and not (Path(model) / "config.json").is_file():
        raise ConfigError(f"embed.model_path {model} is not a model folder (no config.json)")

"""Validation of the study configuration and the model registry.

The schemas (``workflow/schemas/*.schema.yaml``) are the single place where keys, types and
defaults are written down; this module applies them and turns the first violation into one
line that names the key and the file, which is what a user at a login node needs.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from brainshape.errors import BrainshapeError

#: The schemas of the study config and the model registry, in the workflow beside the library.
SCHEMAS = Path(__file__).resolve().parents[2] / "workflow" / "schemas"
CONFIG_SCHEMA = SCHEMAS / "config.schema.yaml"
REGISTRY_SCHEMA = SCHEMAS / "models.schema.yaml"


def schema_default(key: str, schema_path: str | Path = CONFIG_SCHEMA) -> Any:
    """The default the config schema gives top-level ``key`` (e.g. ``model_root``), so that
    command-line defaults never restate it."""
    return load_yaml(schema_path, "schema")["properties"][key]["default"]


def _with_defaults(validator_class):
    """A validator class that fills ``default`` values of missing properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_FillingValidator = _with_defaults(Draft202012Validator)


def load_yaml(path: str | Path, what: str) -> Any:
    """Read a YAML file, with a clear error if it is missing or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise BrainshapeError(
            f"{what} file not found: {path}. Check the path (relative paths are "
            "taken from the directory snakemake runs in)."
        )
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise BrainshapeError(
            f"{what} file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None


def _key(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _describe(error: ValidationError, source: str) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        unknown = extra[0] if extra else "?"
        where = f"{key}.{unknown}" if error.absolute_path else unknown
        hint = difflib.get_close_matches(unknown, allowed, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        listing = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{source}: unknown key '{where}'{suggestion}{listing}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        where = f"{key}.{missing}" if error.absolute_path else missing
        return f"{source}: missing required key '{where}'"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return (
            f"{source}: key '{key}' must be of type {expected}, "
            f"got {type(error.instance).__name__} {error.instance!r}"
        )
    if error.validator == "enum":
        options = ", ".join(map(str, error.validator_value))
        return f"{source}: key '{key}' is {error.instance!r}; choose one of: {options}"
    if error.validator == "pattern":
        return (
            f"{source}: key '{key}' value {error.instance!r} does not match "
            f"{error.validator_value!r}"
        )
    if error.validator == "uniqueItems" and isinstance(error.instance, list):
        repeated = [v for i, v in enumerate(error.instance) if v in error.instance[:i]]
        shown = ", ".join(map(repr, dict.fromkeys(repeated)))
        return f"{source}: key '{key}' lists {shown} more than once; give each value once"
    if error.validator == "propertyNames":
        return f"{source}: name {error.instance!r} under '{key}' is not allowed: {error.message}"
    if error.validator == "anyOf" and all("required" in v for v in error.validator_value):
        # Name the key missing from the closest alternative, and the other ways to satisfy it.
        inst = error.instance if isinstance(error.instance, dict) else {}
        have = {k for k, v in inst.items() if v is not None}
        options = [list(v["required"]) for v in error.validator_value]
        closest = min(options, key=lambda keys: (len(set(keys) - have), -len(set(keys) & have)))
        missing = next(k for k in closest if k not in have)
        others = " or ".join(" and ".join(o) for o in options if o is not closest)
        return f"{source}: missing required key '{key}.{missing}' (or give {others})"
    if error.validator == "oneOf":
        return f"{source}: key '{key}' has an invalid value {error.instance!r}"
    return f"{source}: key '{key}': {error.message}"


def registry_names(reference: str) -> list[str]:
    """The names of a registry table named ``module:TABLE`` (e.g.
    ``brainshape.models:VARIANT_KINDS``): its keys, in order."""
    module, _, table = reference.partition(":")
    try:
        return list(getattr(importlib.import_module(module), table))
    except (ImportError, AttributeError) as error:
        raise BrainshapeError(
            f"schema refers to registry table '{reference}', which does not exist ({error})"
        ) from None


def with_registries(schema: Any) -> Any:
    """A copy of ``schema`` where every ``x-registry: module:TABLE`` also gets ``enum``: the
    table's names. A registry table (variant kinds, metrics, geometry measures) is thus the one
    place that lists the values a key may take; the schema only points at it."""
    if isinstance(schema, dict):
        out = {k: with_registries(v) for k, v in schema.items()}
        if "x-registry" in out:
            out["enum"] = registry_names(out["x-registry"])
        return out
    if isinstance(schema, list):
        return [with_registries(v) for v in schema]
    return schema


def load_schema(schema_path: str | Path) -> Any:
    """A schema file, parsed once per version of it (a runs sheet validates thousands of rows
    against one schema). Shared between callers: read it, never change it
    (:func:`with_registries` copies)."""
    path = Path(schema_path)
    if not path.is_file():
        load_yaml(path, "schema")  # the missing-file message
    return _parsed_schema(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _parsed_schema(path: str, mtime_ns: int) -> Any:
    return load_yaml(path, "schema")


def validate(data: Any, schema_path: str | Path, source: str) -> Any:
    """Validate ``data`` against a YAML JSON-schema, filling defaults in place.

    Returns ``data``. Raises BrainshapeError with one line naming ``source`` (the file the data
    came from) and the offending key.
    """
    schema = with_registries(load_schema(schema_path))
    if data is None:
        data = {}
    errors = list(_FillingValidator(schema).iter_errors(data))
    if errors:
        raise BrainshapeError(_describe(best_match(errors), source))
    return data


def check_schema(schema_path: str | Path) -> None:
    """Raise if a schema file is not itself a valid JSON schema (used by tests)."""
    Draft202012Validator.check_schema(load_yaml(schema_path, "schema"))


def load_registry_dict(path: str | Path, schema_path: str | Path) -> dict:
    """Read and validate a model registry YAML file; returns the dict with defaults filled."""
    data = load_yaml(path, "model registry")
    return validate(data, schema_path, source=str(path))


def check_planted(config: Mapping, registry: Mapping, source: str) -> None:
    """Check that each planted (model, variant) of the demo exists in the registry, where some
    dataset is a demo (``datasets.<name>.demo``). The ``demo`` section has defaults whether or
    not a dataset uses it; a study of published data with its own registry never reads them."""
    if not any(d.get("demo") for d in config["datasets"].values()):
        return
    models = registry.get("models", {})
    for i, entry in enumerate(config["demo"]["planted"]):
        model = entry["model"]
        if model not in models:
            raise BrainshapeError(
                f"{source}: demo.planted[{i}].model '{model}' is not in the "
                f"registry (known: {', '.join(sorted(models))})"
            )
        if entry["variant"] not in models[model]["variants"]:
            raise BrainshapeError(
                f"{source}: demo.planted[{i}].variant '{entry['variant']}' is not a variant of "
                f"'{model}' (known: {', '.join(sorted(models[model]['variants']))})"
            )

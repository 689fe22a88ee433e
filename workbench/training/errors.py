"""`ConfigError`: a user error found before any compute; and the translation of Hydra's and OmegaConf's errors into
one paragraph that names the field, the value given and what is allowed."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import MissingConfigException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from workbench.training.schema import allowed_words


class ConfigError(ValueError):
    """A user error in the config or the command line, found before any compute: the CLI prints no traceback."""


def one_paragraph(text: str) -> str:
    return " ".join(str(text).split())


def got(key: str, value: object, allowed: str) -> ConfigError:
    kind = "" if value is None else f" ({type(value).__name__})"
    return ConfigError(f"{key}: got {value!r}{kind}; allowed: {allowed}")


def unknown_key(key: str, allowed: list[str]) -> ConfigError:
    """A key its parent lacks: the closest valid keys, then all of them."""
    where, _, field = key.rpartition(".")
    near = difflib.get_close_matches(field, allowed, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return ConfigError(
        f"unknown config key {key!r}: no {field!r} in {where or 'the top level'}; {hint}allowed keys: "
        f"{', '.join(allowed)}"
    )


def from_omegaconf(e: OmegaConfBaseException) -> ConfigError:
    """Unknown key -> the closest valid keys; a missing value or a wrong type -> what the field allows."""
    key, value = e.full_key, getattr(e, "value", None)
    field = str(e.key) if e.key is not None else key.rpartition(".")[2]
    if isinstance(e, ConfigAttributeError | ConfigKeyError):
        parent = e.parent_node
        return unknown_key(key, sorted(str(k) for k in parent) if parent is not None else [])
    allowed = allowed_words(e.object_type, field) or one_paragraph(e.msg)
    if isinstance(e, InterpolationResolutionError):  # a value of None here would only mislead
        why = one_paragraph(str(e.msg).partition("full_key:")[0])
        return ConfigError(f"{key}: its interpolation does not resolve ({why}); allowed: {allowed}")
    if isinstance(e, MissingMandatoryValue):
        return ConfigError(f"{key}: missing (no value set); allowed: {allowed}")
    return got(key, value, allowed)


def from_composition(e: BaseException) -> ConfigError:
    """A composition or resolution failure: a `ConfigError` raised inside a resolver as is; an unknown group option;
    a bad key or value (its OmegaConf cause, in words); else the error's text."""
    if isinstance(e, MissingConfigException) and e.options is not None and e.missing_cfg_file:
        group, _, chosen = e.missing_cfg_file.rpartition("/")
        public = ", ".join(o for o in e.options if not o.startswith("_"))
        return ConfigError(f"{group}: got {chosen!r}; allowed: {public}")
    cause, keyed = e, None
    while cause is not None:
        if isinstance(cause, ConfigError):
            return cause
        if keyed is None and isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            keyed = cause
        cause = cause.__cause__ or cause.__context__
    return from_omegaconf(keyed) if keyed is not None else ConfigError(one_paragraph(str(e)))


NAMES_A_FIELD = re.compile(r"^[a-z_]+(\.[a-z_]+)+: ")  # a message that begins with the dotted field it is about


def user_error(key: str, e: BaseException, allowed: str) -> ConfigError:
    """The project's own clear error (a library `ValueError`, an unreadable file) about field `key`, as the
    contract's one paragraph: the field first (the text's own when it begins with one, e.g. `data.eos_token:`),
    what is allowed last (neither repeated when the text has it)."""
    text = one_paragraph(str(e))
    text = text if text.startswith(f"{key}:") or NAMES_A_FIELD.match(text) else f"{key}: {text}"
    return ConfigError(text if "allowed:" in text else f"{text}; allowed: {allowed}")


@contextmanager
def user_errors(key: str, allowed: str, *kinds: type[BaseException]) -> Iterator[None]:
    """Inside, an exception of `kinds` (the ones a user's input causes there) is a `ConfigError` about `key`;
    any other keeps its traceback: it would be a bug."""
    try:
        yield
    except ConfigError:
        raise
    except kinds as e:
        raise user_error(key, e, allowed) from e

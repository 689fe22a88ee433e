"""`ConfigError`: a user error found before any compute; and the translation of Hydra's and OmegaConf's errors into
one paragraph that names the field, the value given and what is allowed."""

from __future__ import annotations

import difflib

from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from workbench.training.schema import allowed_words


class ConfigError(ValueError):
    """A user error in the config or the command line, found before any compute: the CLI prints no traceback."""


def one_paragraph(text: str) -> str:
    return " ".join(str(text).split())


def _omegaconf_cause(e: BaseException) -> OmegaConfBaseException | None:
    while e is not None:
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            return e
        e = e.__cause__ or e.__context__
    return None


def from_omegaconf(e: OmegaConfBaseException) -> ConfigError:
    """Unknown key -> the closest valid keys; a missing value or a wrong type -> what the field allows."""
    key, value = e.full_key, getattr(e, "value", None)
    field = str(e.key) if e.key is not None else key.rpartition(".")[2]
    if isinstance(e, ConfigAttributeError | ConfigKeyError):
        parent = e.parent_node
        allowed = sorted(str(k) for k in parent) if parent is not None else []
        near = difflib.get_close_matches(field, allowed, n=3, cutoff=0.5)
        where = key.rpartition(".")[0] or "the top level"
        hint = f"did you mean {', '.join(near)}? " if near else ""
        return ConfigError(
            f"unknown config key {key!r}: no {field!r} in {where}; {hint}allowed keys: {', '.join(allowed)}"
        )
    allowed = allowed_words(e.object_type, field) or one_paragraph(e.msg)
    if isinstance(e, MissingMandatoryValue):
        return ConfigError(f"{key}: missing (no value set); allowed: {allowed}")
    kind = "" if value is None else f" ({type(value).__name__})"
    return ConfigError(f"{key}: got {value!r}{kind}; allowed: {allowed}")


def from_composition(e: HydraException | OmegaConfBaseException) -> ConfigError:
    """A composition failure: an unknown group option, a bad key or value (with its OmegaConf cause), bad syntax."""
    if isinstance(e, MissingConfigException) and e.options is not None and e.missing_cfg_file:
        group, _, chosen = e.missing_cfg_file.rpartition("/")
        public = ", ".join(o for o in e.options if not o.startswith("_"))
        return ConfigError(f"{group}: got {chosen!r}; allowed: {public}")
    cause = _omegaconf_cause(e)
    if cause is not None:
        return from_omegaconf(cause)
    return ConfigError(one_paragraph(str(e)))

"""`ConfigError`: a user error found before any compute; and the translation of Hydra's, OmegaConf's and YAML's errors
into one paragraph that names the field (or the file, line and key), the value given and what is allowed."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
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
    cause, keyed, seen = e, None, set()
    while cause is not None and id(cause) not in seen:  # a chain can loop: OmegaConf re-raises an error as its own
        seen.add(id(cause))  # __cause__ under OC_CAUSE=1 or a trace function (a debugger, coverage)
        if isinstance(cause, ConfigError):
            return cause
        if isinstance(cause, yaml.YAMLError):
            return from_yaml(cause)
        if keyed is None and isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
            keyed = cause
        cause = cause.__cause__ or cause.__context__
    return from_omegaconf(keyed) if keyed is not None else ConfigError(one_paragraph(str(e)))


def shown(path: Path) -> str:
    """A path as an error shows it: relative to the working dir when under it, else absolute."""
    path = path.absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def from_yaml(e: yaml.YAMLError) -> ConfigError:
    """A config file YAML cannot read: the file, and the key given twice or the line it stopped at."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return ConfigError(f"a config file is not valid YAML ({one_paragraph(str(e))}); allowed: YAML")
    path = Path(mark.name)
    what = f"{'grid' if path.parent.name == 'ablation' else 'config'} file {shown(path)}"
    if isinstance(e, yaml.constructor.ConstructorError) and (twice := duplicate_key(path)):
        key, first, again = twice
        return ConfigError(f"{what}: {key}: given twice (lines {first} and {again}); allowed: each key once (an "
                           "arm's or a level's name is its key: rename or remove one)")  # fmt: skip
    lines = path.read_text().splitlines() if path.is_file() else []

    def line(m: yaml.Mark) -> str:
        """`line N 'its text'`; at the end of the file, the last line with text."""
        n = min(m.line, len(lines))
        while n > 0 and (n >= len(lines) or not lines[n].strip()):
            n -= 1
        text = f" {lines[n].strip()!r}" if n < len(lines) and lines[n].strip() else ""
        return f"line {m.line + 1}" + (text if n == m.line else f" (the end, after line {n + 1}{text})")

    start = getattr(e, "context_mark", None)
    context = f", {e.context} from {line(start)}" if start is not None and e.context else ""
    return ConfigError(f"{what}: {line(mark)}: not valid YAML ({one_paragraph(e.problem or '')}{context}); "
                       "allowed: YAML (`key: value`, `[a, b]`, `{k: v}`; quote a value holding `: `, `#`, `{` or "
                       "`[`)")  # fmt: skip


def duplicate_key(path: Path) -> tuple[str, int, int] | None:
    """The first key given twice in one map of a YAML file: its dotted path, and the lines of both."""

    def walk(node: yaml.Node, prefix: str) -> tuple[str, int, int] | None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value)
                if name in seen:
                    return f"{prefix}{name}", seen[name], key.start_mark.line + 1
                seen[name] = key.start_mark.line + 1
                if found := walk(value, f"{prefix}{name}."):
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                if found := walk(item, f"{prefix}{i}."):
                    return found
        return None

    root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    return walk(root, "") if root is not None else None


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

"""The command-line helper every ``hwlm-*`` command uses: one parser and one way to report errors.

Parsing (`parse_command`): an argparse parser built from the command's settings dataclasses (the flag rules of
transformers' `HfArgumentParser`, without importing transformers: ``--help`` answers before torch loads), so flags
carry the field names (``--per_device_eval_batch_size``; ``--per-device-eval-batch-size`` works too) and
``--help`` shows one section per dataclass, titled by its docstring, with each field's ``help``. Every command
accepts ``--config PRESET.yaml|.json`` (a mapping of field names; flags given on the command line override it;
``config_overrides`` from the command line updates the preset's mapping instead of replacing it) and ``--debug``.

Errors (`run_main`): a user error is one line on stderr, ``hwlm-<command>: error: <message>``, and exit status 2,
argparse's convention. User errors are:

- hwlm's own `hwlm.errors.UserError` (bad settings from the dataclasses' ``__post_init__``, `UsageError` for an
  unknown flag or a malformed value instead of argparse's usage dump, `CheckpointError`, `OutputDirError`, ...) and
  the models' `hwlm.models.config_checks.InvalidInput` (a bad config value or input);
- `FileNotFoundError`, `NotADirectoryError`, `IsADirectoryError` and `PermissionError`: a path the user gave.

A `ValueError` raised anywhere else (inside torch, transformers, datasets) is not the user's to fix from a message:
it keeps its traceback.

A command may name further *run failures* (``failures=``): not the user's typing, but an outcome the message
explains fully, reported on one line with exit status 1: ``TrainingDiverged`` (hwlm-train: the loss became
NaN; the last good checkpoint is kept) and ``HubUnreachable`` (hwlm-push). ``KeyboardInterrupt`` exits 130.
Anything else (``TypeError``, ``AttributeError``, ...) is a bug and keeps its traceback. ``--debug`` or
``HWLM_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
import types
import typing
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar

import yaml

from hwlm.model_building import check_tokenizer_fits  # noqa: F401  (re-exported: the commands' checks)
from hwlm.errors import USER_ERRORS, UserError, user_errors  # USER_ERRORS re-exported

__all__ = [
    "USER_ERRORS",
    "UsageError",
    "CommandParser",
    "parse_command",
    "read_preset",
    "check_model_folder",
    "check_tokenizer_fits",
    "debug_requested",
    "run_main",
]

T = TypeVar("T")


class UsageError(UserError):
    """A malformed command line: an unknown flag, a missing argument or a value of the wrong type."""


#: The extensions ``--config`` reads, and the lone-argument shorthand ``hwlm-prepare settings.yaml`` accepts.
PRESET_SUFFIXES = (".yaml", ".yml", ".json")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the layout of the command's docstring (its examples) and shows each flag's default."""


def _truthy(value: str | bool) -> bool:
    """A boolean flag's value: yes/no, true/false, t/f, y/n, 1/0 (any case), as `HfArgumentParser` reads them."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"Truthy value expected: got {value} but expected one of yes/no, true/false, "
                                     "t/f, y/n, 1/0 (case insensitive).")


def _choice_of(choices: Sequence[Any]) -> Callable[[str], Any]:
    """Map a flag's text to the Literal choice it spells (``"1"`` → ``1``); argparse then checks ``choices``."""
    by_text = {str(choice): choice for choice in choices}
    return lambda text: by_text.get(text, text)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _add_field(group, f: dataclasses.Field, hint: Any, preset: dict[str, Any]) -> None:
    """Add ``--name`` (and ``--na-me``) for one dataclass field, with the rules of transformers' HfArgumentParser.

    ``Optional[X]`` is parsed as ``X``; ``bool`` takes ``--flag``, ``--flag false`` and, when it defaults to True,
    ``--no_flag``; ``Literal[...]`` lists its choices; ``list[X]`` takes one or more values. A field without a
    default is required unless the preset (``--config``) gives it. ``metadata`` other than ``help`` (``nargs``,
    ``const``, ``choices``) goes to ``add_argument`` as is.
    """
    names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
    kwargs = dict(f.metadata)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"field {f.name!r}: only Optional[X] unions can be parsed, got {hint}")
        hint = args[0]
    origin = typing.get_origin(hint)
    default = _field_default(f)
    if origin is typing.Literal:
        kwargs.setdefault("choices", list(typing.get_args(hint)))
        kwargs["type"] = _choice_of(kwargs["choices"])
    elif hint is bool:
        kwargs["type"] = _truthy
        if default is not None:
            default = False if default is dataclasses.MISSING else default
            kwargs.setdefault("nargs", "?")
            kwargs.setdefault("const", True)
    elif origin is list:
        kwargs["type"] = typing.get_args(hint)[0]
        kwargs["nargs"] = "+"
    else:
        kwargs["type"] = hint
    if f.name in preset:
        kwargs["default"] = preset[f.name]
    elif default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    group.add_argument(*names, dest=f.name, **kwargs)
    if hint is bool and f.default is True:
        group.add_argument(f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}", action="store_false", dest=f.name,
                           help=f"Sets --{f.name} to false.")


class CommandParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` built from settings dataclasses: one ``--help`` section per dataclass, a flag per
    field (the field's name; dashes work too), and `UsageError` instead of printing usage and exiting.

    The flags follow transformers' `HfArgumentParser` (see `_add_field`), built here with plain argparse so that a
    command's ``--help`` and its settings errors need neither transformers nor torch.

    Args:
        dataclass_types (`Sequence[type]`): the settings dataclasses, in the order `parse_command` returns them.
        positionals (`Sequence[str]`, *optional*): field names taken as positional arguments (``hwlm-push FOLDER
            REPO_ID``) instead of ``--name`` flags.
        preset (`dict`, *optional*): field values from ``--config``: they replace the defaults, and a field they
            give is no longer required on the command line.
        **kwargs: passed to `argparse.ArgumentParser` (``prog``, ``description``).
    """

    def __init__(self, dataclass_types: Sequence[type], positionals: Sequence[str] = (),
                 preset: Optional[dict[str, Any]] = None, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)
        preset = preset or {}
        for dtype in dataclass_types:
            doc = (dtype.__doc__ or "").strip().split("\n\n")[0]
            group = self.add_argument_group(dtype.__name__, " ".join(doc.split()) or None)
            # A dataclass may sort its fields into titled sections (`HELP_SECTIONS`: title -> field names).
            sections = getattr(dtype, "HELP_SECTIONS", {})
            section_of = {name: title for title, names in sections.items() for name in names}
            section_groups = {title: self.add_argument_group(f"{dtype.__name__}: {title}") for title in sections}
            hints = typing.get_type_hints(dtype)
            for f in dataclasses.fields(dtype):
                if not f.init:
                    continue
                target = section_groups.get(section_of.get(f.name), group)
                if f.name in positionals:
                    target.add_argument(f.name, metavar=f.name.upper(), help=f.metadata.get("help"))
                    if f.name in preset:
                        self.set_defaults(**{f.name: preset[f.name]})
                else:
                    _add_field(target, f, hints[f.name], preset)

    def error(self, message: str):
        # argparse would print the (long) usage and exit 2 itself; raising lets run_main print one line
        raise UsageError(f"{message} (see {self.prog} --help)")


def read_preset(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``--config`` preset: a YAML or JSON mapping of field names to values.

    Raises:
        FileNotFoundError / IsADirectoryError: no file at ``path``.
        ValueError: the file is not UTF-8, not valid YAML/JSON, or not a mapping (an empty file included).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--config {str(path)!r} is a directory; pass a preset file (presets/*.yaml)")
    if not path.is_file():
        raise FileNotFoundError(f"--config {str(path)!r} does not exist; presets live in presets/*.yaml")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise UserError(f"--config {str(path)!r} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        detail = " ".join(str(err).split())
        raise UserError(f"--config {str(path)!r} is not valid {path.suffix[1:].upper()}: {detail}") from None
    if not isinstance(data, dict):
        raise UserError(
            f"--config {str(path)!r} must be a mapping of field: value, got {type(data).__name__} "
            f"({'an empty file' if data is None else repr(data)[:60]})"
        )
    return data


def _preset_path(argv: list[str]) -> tuple[Optional[str], list[str]]:
    """Split ``--config PATH`` (or ``--config=PATH``, or a lone ``PATH.yaml``) from the rest of ``argv``."""
    if len(argv) == 1 and argv[0].endswith(PRESET_SUFFIXES) and not argv[0].startswith("-"):
        return argv[0], []  # the shorthand of transformers' examples: `hwlm-prepare settings.yaml`
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    return known.config, rest


def _read_preset_fields(classes: Sequence[type], path: str, prog: str) -> tuple[dict[str, Any], Any]:
    """The preset's field values (the parser's defaults) and its ``config_overrides`` (merged after parsing)."""
    preset = read_preset(path)
    allowed = {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(preset) - allowed)
    if unknown:
        raise UserError(f"--config {path!r} has unknown field(s) {unknown}; see {prog} --help for the fields")
    overrides = preset.pop("config_overrides", None)
    return preset, overrides


def parse_command(
    classes: Sequence[type],
    argv: Optional[Iterable[str]] = None,
    *,
    prog: str,
    description: Optional[str] = None,
    positionals: Sequence[str] = (),
) -> tuple:
    """Parse a command line into instances of ``classes`` (the one parser of every ``hwlm-*`` command).

    Args:
        classes (`Sequence[type]`): settings dataclasses whose fields carry ``metadata={"help": ...}``.
        argv (`Iterable[str]`, *optional*): the arguments; default ``sys.argv[1:]``.
        prog (`str`): the command's name, e.g. ``"hwlm-eval"`` (in ``--help`` and error messages).
        description (`str`, *optional*): the top of ``--help`` (the command module's docstring).
        positionals (`Sequence[str]`, *optional*): fields given by position instead of as ``--name``.
    Returns:
        `tuple` of dataclass instances, in the order of ``classes``. Each ran its own ``__post_init__`` checks.
    Raises:
        UsageError: unknown flag, missing argument, wrong type. ValueError / FileNotFoundError: a bad preset
        or a setting its dataclass refuses.
    """
    from hwlm.training.arguments import merge_config_overrides

    argv = list(sys.argv[1:] if argv is None else argv)
    preset_path, rest = _preset_path(argv)
    preset, preset_overrides = _read_preset_fields(classes, preset_path, prog) if preset_path else ({}, None)
    parser = CommandParser(classes, positionals=positionals, preset=preset, prog=prog, description=description)
    parser.add_argument("--config", default=None, help="A YAML or JSON preset of these fields; flags override it.")
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of an error (or HWLM_DEBUG=1).")
    namespace = parser.parse_args(rest)  # CommandParser.error raises UsageError for unknown flags
    parsed = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        parsed.append(cls(**{k: v for k, v in vars(namespace).items() if k in names}))
    if preset_overrides is not None:
        for obj in parsed:
            if hasattr(obj, "config_overrides"):  # the command line's pairs update the preset's mapping
                obj.config_overrides = merge_config_overrides(preset_overrides, obj.config_overrides)
    return tuple(parsed)


def check_model_folder(name_or_path: str, flag: str = "--model_name_or_path") -> None:
    """Refuse a local model folder that cannot load, with the reason, before transformers tries it.

    A name that does not exist here and reads as a Hub id (``user/model``) is left to ``from_pretrained``.

    Raises:
        FileNotFoundError: the path does not exist, or holds no ``config.json``.
        NotADirectoryError: the path is a file.
        ValueError: ``config.json`` is empty, not UTF-8 or not JSON.
    """
    path = Path(name_or_path).expanduser()
    if not path.exists():
        if path.is_absolute() or name_or_path.startswith(".") or name_or_path.count("/") != 1:
            raise FileNotFoundError(f"{flag} {name_or_path!r} does not exist; pass a folder written by hwlm-train")
        return  # a Hub repository id
    if not path.is_dir():
        raise NotADirectoryError(f"{flag} {name_or_path!r} is a file; pass the folder holding config.json")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{flag} {name_or_path!r} holds no config.json; pass a folder written by hwlm-train")
    raw = config.read_bytes()
    if not raw.strip():
        raise UserError(f"{config} is empty; the folder is not a complete model (re-run hwlm-train or re-download)")
    try:
        json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{config} is not UTF-8 (byte {err.start}); the folder is damaged") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{config} is not valid JSON ({err}); the folder is damaged") from None


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """``--debug`` among the arguments, or ``HWLM_DEBUG`` set to anything but ``""``, ``0``, ``false`` or ``no``."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("HWLM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def run_main(
    prog: str,
    run: Callable[[list[str]], T],
    argv: Optional[Iterable[str]] = None,
    *,
    failures: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``run(argv)`` and turn the errors a user can act on into one line and an exit status.

    Args:
        prog (`str`): the command's name, the prefix of the error line.
        run (`Callable[[list[str]], T]`): the command's ``run``; it parses ``argv`` itself.
        argv (`Iterable[str]`, *optional*): the arguments; default ``sys.argv[1:]``.
        failures (`tuple[type]`): run failures of this command, reported on one line with exit status 1.
    Returns:
        what ``run`` returned.
    Raises:
        SystemExit: 2 for a user error (`USER_ERRORS`), 1 for one of ``failures``, 130 for Ctrl-C; with
        `debug_requested` the original exception propagates instead (its traceback is printed).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except KeyboardInterrupt:
        if debug_requested(argv):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except (*user_errors(), *failures) as err:
        if debug_requested(argv):
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(1 if isinstance(err, failures) and not isinstance(err, user_errors()) else 2)

"""What the project's command-line tools share: flags derived from dataclass fields, so no CLI
restates a default, and one way to run a command, so every error is one line and an exit code.

`slm-node` and `slm-hub` both build their option groups this way (the one shared place both may
import is `slm`). A field declared with `option(...)` becomes `--field-name` (or its `flag`),
typed by its annotation, with its `help` and its default in the help text; parsing leaves a
flag the user did not give as None, and `values` hands only the given ones to the dataclass,
which applies its own defaults and checks every value in `__post_init__`.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, Field, field, fields
from typing import Any

Describe = Callable[[Field], str]
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def option(
    default: Any = MISSING, help: str = "", *, flag: str = "", metavar: str = "",
    choices: Sequence[str] = (),
) -> Any:  # fmt: skip
    """A dataclass field that is also a command-line flag (`add_flags`): its default, what it
    means, and optionally its flag name, placeholder and allowed values."""
    meta: dict[str, Any] = {"help": help}
    for key, value in (("flag", flag), ("metavar", metavar), ("choices", choices)):
        if value:
            meta[key] = value
    return field(default=default, metadata=meta)


def parser_with_commands(
    prog: str, description: str, examples: str
) -> tuple[argparse.ArgumentParser, Any]:
    """A tool's parser and its subcommands (the second), examples shown as written."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def run(
    prog: str, parser: argparse.ArgumentParser, argv: list[str] | None,
    errors: tuple[type[Exception], ...],
) -> int:  # fmt: skip
    """Parse `argv` and run the chosen command (`args.run`): one of `errors` (the user's to
    fix), an OS error or Ctrl-C is one line on stderr and a non-zero exit, never a traceback."""
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # files and pipes: a missing folder, a full disk, a closed pager
        if not isinstance(exc, BrokenPipeError):
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _describe(f: Field) -> str:
    """The field's help, with its default unless it has none worth showing."""
    text = f.metadata.get("help", "")
    default = _default(f)
    if default is MISSING or default is None or default is False or default in ((), ""):
        return text
    shown = default if not isinstance(default, float) else f"{default:g}"
    return f"{text} (default: {shown})" if text else f"default: {shown}"


def _flag(f: Field) -> str:
    """--field-name, without the unit suffix of a `_s` field (seconds): --score-deadline."""
    return f.metadata.get("flag") or "--" + f.name.removesuffix("_s").replace("_", "-")


def flag_of(cls: type, name: str) -> str:
    """The flag of field `name` of `cls`, for a message that tells the user what to change."""
    return _flag(next(f for f in fields(cls) if f.name == name))


def _metavar(f: Field, kind: type) -> str:
    if "metavar" in f.metadata:
        return f.metadata["metavar"]
    return "SECONDS" if f.name.endswith("_s") else kind.__name__.upper()


def _kind(annotation: Any) -> tuple[type, bool]:
    """(the scalar type a flag parses, whether it repeats) of a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return args[0], True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return args[0], False
    return annotation, False


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
    only: Iterable[str] | None = None, prefix: str = "", describe: Describe = _describe,
) -> None:  # fmt: skip
    """A flag for each field of `cls` (those in `only`, in field order), stored as
    `<prefix><field name>`; a field without a default is a required flag."""
    hints = typing.get_type_hints(cls)
    wanted = None if only is None else set(only)
    for f in fields(cls):
        if wanted is not None and f.name not in wanted:
            continue
        kind, repeats = _kind(hints[f.name])
        options: dict[str, Any] = {"dest": prefix + f.name, "default": None, "help": describe(f)}
        if _default(f) is MISSING:
            options["required"] = True
        if kind is bool:
            options["action"] = "store_true"
        else:
            options["type"] = kind
            options["metavar"] = _metavar(f, kind)
            if repeats:
                options["action"] = "append"
            if "choices" in f.metadata:
                options["choices"] = f.metadata["choices"]
                del options["metavar"]
        parser.add_argument(_flag(f), **options)


def values(cls: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The fields of `cls` the user gave a flag for: {field name: value}."""
    out = {}
    for f in fields(cls):
        value = getattr(args, prefix + f.name, None)
        if value is None:
            continue
        out[f.name] = tuple(value) if isinstance(value, list) else value
    return out

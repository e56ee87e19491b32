"""Arguments, input and error handling shared by the NLA console scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nla_lightning.errors import NLAConfigError

if TYPE_CHECKING:
    from nla_lightning.inference.nla import NLA


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--av, --ar, --target, --device, --dtype, --4bit."""
    parser.add_argument("--av", required=True, help="activation verbalizer directory")
    parser.add_argument("--ar", required=True, help="activation reconstructor directory")
    parser.add_argument("--target", default=None, help="target model (default: the AV's base)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--4bit", dest="quantize_4bit", action="store_true", help="load in 4 bit")


def add_text_args(parser: argparse.ArgumentParser) -> None:
    """(--text STR | --file PATH) [--tokens 3,5,7]."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to read")
    source.add_argument("--file", help="a UTF-8 text file to read")
    parser.add_argument("--tokens", default=None, help="token indices, e.g. 3,5,7 (default: all)")


def add_output_args(parser: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
    parser.add_argument("--format", choices=formats, default=formats[0])
    parser.add_argument("--out", default=None, help="output file (default: stdout)")


def read_text(args: argparse.Namespace) -> str:
    """The --text, or the --file read as UTF-8; an empty text is refused before any loading."""
    text = args.text
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise NLAConfigError(f"--file {args.file} is not valid UTF-8 text: {err}") from err
        except OSError as err:
            raise NLAConfigError(f"cannot read --file {args.file}: {err.strerror}") from err
    if not text or not text.strip():
        raise NLAConfigError("the text is empty: give a non-empty --text or --file")
    return text


def parse_indices(value: str | None, flag: str) -> list[int] | None:
    """'3,5,7' -> [3, 5, 7]; None stays None (all)."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError as err:
        raise NLAConfigError(
            f"{flag} {value!r}: expected comma-separated token indices, e.g. 3,5,7"
        ) from err


def load_nla(args: argparse.Namespace) -> NLA:
    # Imported here so --help and argument errors answer without importing torch.
    from nla_lightning.inference.nla import NLA

    return NLA.load(
        args.av,
        args.ar,
        target=args.target,
        quantize_4bit=args.quantize_4bit,
        device=args.device,
        dtype=args.dtype,
    )


def write(output: str, path: str | None) -> None:
    """To the file at path (UTF-8), else to stdout."""
    if path is None:
        sys.stdout.write(output)
        return
    try:
        Path(path).write_text(output, encoding="utf-8")
    except OSError as err:
        raise NLAConfigError(f"cannot write --out {path}: {err.strerror}") from err


def run(prog: str, body: Callable[[], int]) -> int:
    """body's exit code; argparse's exits become return codes and NLAConfigError exit 2."""
    try:
        return body()
    except SystemExit as exit_:
        # argparse exits (2 on bad arguments, 0 for --help); main returns instead.
        return exit_.code if isinstance(exit_.code, int) else 1
    except NLAConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2

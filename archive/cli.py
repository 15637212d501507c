"""The ``python -m archive`` command line: ``build``, ``inspect``, ``check``, ``try``, ``convert``,
``export-kserve``.

Exit status: 0 on success, 1 when a model or file fails (the message names it and says why),
2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from archive.build import DEFAULT_STORE, build_models
from archive.convert import WARNING, convert_pickled_model
from archive.dev_loop import check_archive, read_body, try_request
from archive.errors import ArchiveError
from archive.inspection import describe_checkpoint
from archive.kserve_export import CONFIG_FILE, MODEL_STORE_DIR, export_kserve
from archive.spec import DEFAULT_SPEC
from handlers.errors import HandlerError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        status: int = args.run(args)
    except (ArchiveError, HandlerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return status


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m archive",
        description="Turn PyTorch checkpoints into validated, reproducible TorchServe archives.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build", help="check and pack the models of a spec into a model store"
    )
    build.add_argument("names", nargs="*", metavar="NAME", help="models to build (default: all)")
    build.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="default: %(default)s")
    build.add_argument("--store", type=Path, default=DEFAULT_STORE, help="default: %(default)s")
    build.add_argument(
        "--force", action="store_true", help="rebuild even when an archive is up to date"
    )
    build.set_defaults(run=run_build)

    inspect = commands.add_parser("inspect", help="list what a checkpoint file holds")
    inspect.add_argument("checkpoint", type=Path)
    inspect.set_defaults(run=run_inspect)

    check = commands.add_parser(
        "check",
        help="load a built .mar in this process and replay its recorded examples (no Java)",
    )
    check.add_argument("mar", type=Path, metavar="MODEL.mar")
    check.set_defaults(run=run_check)

    attempt = commands.add_parser(
        "try", help="answer one request in this process as the served .mar would (no Java)"
    )
    attempt.add_argument("mar", type=Path, metavar="MODEL.mar")
    attempt.add_argument(
        "body",
        metavar="BODY",
        help="a file, - for standard input, or the body itself (JSON if it parses, else text)",
    )
    attempt.add_argument(
        "--content-type",
        metavar="T",
        help="the request's Content-Type (default: from the file's extension, or JSON/text)",
    )
    attempt.set_defaults(run=run_try)

    convert = commands.add_parser(
        "convert", help="turn a whole pickled model (torch.save(model)) into a state_dict file"
    )
    convert.add_argument("source", type=Path, metavar="MODEL.pt")
    convert.add_argument("output", type=Path, metavar="OUT")
    convert.add_argument(
        "--trust-pickle",
        action="store_true",
        help="required: unpickling runs code, so only for files you made or trust",
    )
    convert.add_argument(
        "--model-file", type=Path, metavar="FILE", help="Python file defining the model's class"
    )
    convert.set_defaults(run=run_convert)

    export = commands.add_parser(
        "export-kserve",
        usage=EXPORT_USAGE,
        help="write a store's archives as KServe's TorchServe runtime reads them",
    )
    # DIR, then options and names in any order (`DIR --store S NAME`): argparse alone would
    # refuse a positional after an option once `NAME ...` matched nothing, so the rest is
    # parsed intermixed by run_export_kserve.
    export.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        metavar="DIR [NAME ...]",
        help="where to write the layout; the archives to export (default: all)",
    )
    export.add_argument("--store", type=Path, default=DEFAULT_STORE, help="default: %(default)s")
    export.set_defaults(run=run_export_kserve)
    return parser


def run_build(args: argparse.Namespace) -> int:
    results = build_models(args.spec, args.store, args.names, force=args.force, progress=_say)
    built = sum(result.status == "built" for result in results)
    _say(
        f"{len(results)} archive(s) in {args.store}: {built} built, {len(results) - built} skipped"
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    print(describe_checkpoint(args.checkpoint))
    return 0


def run_check(args: argparse.Namespace) -> int:
    result = check_archive(args.mar)
    for line in result.lines():
        print(line)
    return 0 if result.ok else 1


def run_try(args: argparse.Namespace) -> int:
    body, content_type = read_body(args.body, args.content_type, sys.stdin.buffer)
    status, answer = try_request(args.mar, body, content_type)
    sys.stdout.buffer.write(answer + b"\n")
    sys.stdout.flush()
    if status != 200:
        print(f"status {status}", file=sys.stderr)
        return 1
    return 0


def run_convert(args: argparse.Namespace) -> int:
    if not args.trust_pickle:
        print(
            f"error: refusing to unpickle {args.source} without --trust-pickle: "
            + WARNING.format(path=args.source),
            file=sys.stderr,
        )
        return 2
    converted = convert_pickled_model(args.source, args.output, args.model_file)
    print(
        f"wrote {args.output}: {converted.tensors} tensors, {converted.values:,} parameters "
        f"of {converted.model_module}.{converted.model_class}\n"
        f'in models.toml: model_class = "{converted.model_class}", and checkpoint = the path '
        f"of {args.output.name} relative to models.toml"
    )
    return 0


EXPORT_USAGE = "python -m archive export-kserve DIR [--store STORE] [NAME ...]"


def run_export_kserve(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser(prog="python -m archive export-kserve", usage=EXPORT_USAGE)
    parser.add_argument("target", type=Path, metavar="DIR")
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--store", type=Path, default=args.store)
    if not args.arguments:
        parser.error("DIR is required: where to write the layout")
    args = parser.parse_intermixed_args(args.arguments)
    models = export_kserve(args.store, args.target, args.names)
    for model in models:
        _say(f"exported {model.name} {model.version} ({model.mar_name})")
    _say(
        f"{len(models)} model(s) in {args.target}: {CONFIG_FILE} and {MODEL_STORE_DIR}/; "
        "point an InferenceService's storageUri at a copy of it (deploy/kserve/)"
    )
    return 0


def _say(line: str) -> None:
    print(line, flush=True)

"""The ``rerankforge`` command: typer app, one module per command group; errors print one clean line."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.markup import escape
from typer.exceptions import TyperException

from rerankforge.cli import build as build_cmd
from rerankforge.cli import tools
from rerankforge.cli.common import console, err_console
from rerankforge.errors import MissingDependencyError, RerankforgeError

app = typer.Typer(
    name="rerankforge",
    help="Turn a folder of documents into your own reranker: synthetic queries (and grades) from a local LLM tune "
    "the first stage's bi-encoder on your corpus, and a cross-encoder when the backbone is a pretrained reranker; "
    "the build serves whichever it measured best against the untuned first stage, exported to ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("build")(build_cmd.build)
app.command("eval")(tools.eval_command)
app.command("report")(tools.report_command)
app.command("export")(tools.export_command)
app.command("serve")(tools.serve_command)


def _quiet_libraries() -> None:
    # Library progress bars and notices would garble rich's display; our own progress replaces them.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # air-gapped by design: models come from paths or the local cache
    level = logging.DEBUG if os.environ.get("RERANKFORGE_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # a library that sets its own logger to DEBUG (bm25s does, on
        handler.setLevel(level)  # import) would otherwise print its debug lines in the middle of the display
    for noisy in ("unstructured", "pikepdf", "httpx", "sentence_transformers", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR))


# import names that differ from their distribution's name
_DISTRIBUTION_OF = {"sklearn": "scikit-learn", "pptx": "python-pptx", "docx": "python-docx", "pdfminer": "pdfminer.six"}
# the extra each command needs first (export traces with torch: the build extra)
_EXTRA_OF_COMMAND = {"build": "build", "export": "build", "serve": "serve", "eval": "eval", "report": "eval"}


def extra_providing(module: str, command: str) -> str | None:
    """The rerankforge extra that installs ``module`` (its top-level import name), preferring the one
    ``command`` needs; None when no extra does (then the error is not a missing extra).

    Example:
        >>> extra_providing("pathspec", "build"), extra_providing("onnxruntime", "serve"), extra_providing("x", "")
        ('build', 'serve', None)
    """
    import re
    from importlib.metadata import PackageNotFoundError, requires

    top = module.split(".")[0]
    wanted = _DISTRIBUTION_OF.get(top, top).lower().replace("_", "-")
    try:
        requirements = requires("rerankforge") or []
    except PackageNotFoundError:
        return None
    extras = []
    for requirement in requirements:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        extra = re.search(r"extra\s*==\s*['\"]([\w-]+)['\"]", requirement)
        if extra and name == wanted:
            extras.append(extra.group(1))
    preferred = [_EXTRA_OF_COMMAND.get(command), "build", "serve", "eval", "llm"]
    return next((extra for extra in preferred if extra in extras), None)


def main() -> None:
    _quiet_libraries()
    try:
        app(standalone_mode=False)
    except RerankforgeError as exc:
        if os.environ.get("RERANKFORGE_DEBUG"):
            console.print_exception()
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished work is kept; run the same command again to resume.")
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except TyperException as exc:  # typer's own usage errors (it vendors click) keep their messages and exit codes
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err_console.print(exc.format_message())
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        extra = extra_providing(exc.name or "", sys.argv[1] if len(sys.argv) > 1 else "")
        if extra is None or os.environ.get("RERANKFORGE_DEBUG"):
            raise
        missing = MissingDependencyError(exc.name or "", extra, "This command")
        err_console.print(f"[bold red]error:[/] {escape(str(missing))}", soft_wrap=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("RERANKFORGE_DEBUG"):
            raise
        err_console.print(
            f"[bold red]error:[/] {escape(f'{type(exc).__name__}: {exc}')}\n"
            "Set RERANKFORGE_DEBUG=1 to see the full traceback, and please report it."
        )
        sys.exit(1)


if __name__ == "__main__":
    main()

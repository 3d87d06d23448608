"""``dlx`` commands for one's tools (registered on ``dlx.cli_app.app``): ``dlx schema``, the JSON Schemas of the
experiment and sweep files for editors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dlx.cli_app import _err, app, guarded


def _schema_target(write: bool, output: Path | None, sweep: bool) -> Path | None:
    """Where ``dlx schema`` saves the schema (None: print it); a one-line DlxError for a path it cannot take."""
    from dlx.errors import DlxError
    from dlx.schema_json import EXPERIMENT_SCHEMA_FILE, EXPERIMENTS_DIR, SWEEP_SCHEMA_FILE

    if output is not None:
        if output.is_dir():
            raise DlxError(f"--output {output}: is a folder; give a file, e.g. {output / 'dlx.schema.json'}")
        blocked = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise DlxError(f"--output {output}: {blocked} is a file, not a folder; give a file in a folder")
        return output
    if not write:
        return None
    if not EXPERIMENTS_DIR.is_dir():
        raise DlxError(
            f"--write: no {EXPERIMENTS_DIR}/ folder here ({Path.cwd()}); run it in the project folder "
            "or give --output FILE"
        )
    return SWEEP_SCHEMA_FILE if sweep else EXPERIMENT_SCHEMA_FILE


@app.command()
def schema(
    sweep: Annotated[
        bool, typer.Option("--sweep", help="the schema of sweep files (experiments/width-depth.yaml)")
    ] = False,
    write: Annotated[
        bool,
        typer.Option(
            "--write", help="save it as experiments/dlx.schema.json (with --sweep: experiments/dlx.sweep.schema.json)"
        ),
    ] = False,
    output: Annotated[Path | None, typer.Option(help="save it to this file instead")] = None,
) -> None:
    """Print the JSON Schema of experiment files (--sweep: sweep files) for editor completion and YAML checks."""

    def body() -> None:
        from dlx.errors import DlxError
        from dlx.runs import write_text_atomic
        from dlx.schema_json import experiment_schema, schema_text, sweep_schema

        target = _schema_target(write, output, sweep)
        text = schema_text(sweep_schema() if sweep else experiment_schema())
        if target is None:
            sys.stdout.write(text)
            return
        try:
            write_text_atomic(target, text)
        except OSError as e:
            raise DlxError(f"cannot write {target}: {e.strerror or e}") from None
        kind = "sweep files" if sweep else "experiment files"
        _err(f"wrote {target} (the JSON Schema of {kind})")

    guarded(body)

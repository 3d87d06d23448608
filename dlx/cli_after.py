"""``dlx`` commands for after training: eval, export, predict, ensemble (registered on ``dlx.cli_app.app``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dlx.cli_app import _console, _err, app, guarded


@app.command(name="eval")
def eval_(
    target: Annotated[Path, typer.Argument(help="a run folder (runs/<name>/<run-id>) or a checkpoint file in one")],
    split: Annotated[str, typer.Option(help="test or val")] = "test",
    checkpoint: Annotated[str, typer.Option(help="best (best.pt) or last (last.pt)")] = "best",
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (default: the run's)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="change a key of the run's config, e.g. data.eval_batch_size=500")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="where eval.json and pictures go (default <run>/eval/...)")
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="average over 1-pixel shifts (and mirror images if trained with hflip)")
    ] = False,
    data: Annotated[
        Path | None, typer.Option(help="another dataset: an experiment file whose data: section is used")
    ] = None,
) -> None:
    """Measure a finished run's weights again: loss, top-1/top-5, per-class precision/recall, confusions."""

    def body() -> None:
        from dlx.assess import evaluate_run
        from dlx.progress import pct

        r = evaluate_run(target, split=split, checkpoint=checkpoint, precision=precision, overrides=set_ or [],
                         output=output, tta=tta, data_file=data)  # fmt: skip
        console = _console()
        views = f", test-time augmentation over {len(r['tta'])} views" if r["tta"] else ""
        console.print(f"{r['run']} ({Path(r['checkpoint']).name}, {r['precision']}) on {r['split']}: "
                      f"{r['images']:,} images{views}", markup=False, highlight=False)  # fmt: skip
        console.print(f"loss {r['loss']:.4f}  top-1 {pct(r['acc'])} ({r['correct']:,} right)  top-5 {pct(r['top5_acc'])}",
                      markup=False, highlight=False)  # fmt: skip
        worst = sorted(r["per_class"].items(), key=lambda kv: kv[1]["recall"] if kv[1]["recall"] is not None else 1)
        console.print("lowest recall: " + ", ".join(f"{name} {pct(v['recall'])}" for name, v in worst[:3]),
                      markup=False, highlight=False)  # fmt: skip
        if r["most_confused"]:
            console.print("most confused: " + ", ".join(f"{c['true']}->{c['predicted']} x{c['count']}"
                                                        for c in r["most_confused"]), markup=False, highlight=False)  # fmt: skip
        _err(f"wrote {r['folder']}")

    guarded(body)


@app.command()
def export(
    target: Annotated[Path, typer.Argument(help="a run folder (runs/<name>/<run-id>) or a checkpoint file in one")],
    format_: Annotated[str, typer.Option("--format", help="torchscript, onnx or safetensors")] = "torchscript",
    output: Annotated[Path | None, typer.Option(help="the model file (default <run>/export/model.<ext>)")] = None,
    checkpoint: Annotated[str, typer.Option(help="best (best.pt) or last (last.pt)")] = "best",
) -> None:
    """Write a run's model as a file to ship, reload it and compare its logits with the run's model."""

    def body() -> None:
        from dlx.export import export_run

        r = export_run(target, fmt=format_, output=output, checkpoint=checkpoint)
        _err(f"wrote {r['path']} ({r['bytes']:,} bytes, {r['format']}) and {r['path']}.json; reloaded: max |logit "
             f"difference| {r['max_abs_logit_diff']:.2g} over {r['checked_images']} test images")  # fmt: skip

    guarded(body)


@app.command(name="predict")
def predict_(
    target: Annotated[Path, typer.Argument(help="a run folder (runs/<name>/<run-id>) or a checkpoint file in one")],
    images: Annotated[list[Path], typer.Argument(help="image files or folders of them")],
    top: Annotated[int, typer.Option(help="classes shown per image")] = 3,
    format_: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    checkpoint: Annotated[str, typer.Option(help="best (best.pt) or last (last.pt)")] = "best",
) -> None:
    """Classify image files with a trained run (its preprocessing): top classes and probabilities."""

    def body() -> None:
        from dlx.errors import DlxError
        from dlx.predict import predict, print_table, render

        if format_ not in ("table", "csv", "json"):
            raise DlxError(f"--format {format_!r}: choose table, csv or json")
        results = predict(target, list(images), top=top, checkpoint=checkpoint)
        if format_ == "table":
            print_table(results, f"{len(results)} image(s), {target}", _console())
        else:
            sys.stdout.write(render(results, format_))

    guarded(body)


@app.command(name="ensemble")
def ensemble_(
    paths: Annotated[list[Path], typer.Argument(help="run folders, sweep folders or folders of runs")],
    top: Annotated[int | None, typer.Option(min=2, help="only the best K runs by --by (validation)")] = None,
    by: Annotated[str, typer.Option(help="val_acc or val_loss: how --top chooses (never by test)")] = "val_acc",
    method: Annotated[str, typer.Option(help="mean (of softmax) or vote (majority)")] = "mean",
    name: Annotated[str, typer.Option(help="the ensemble's name: runs/<name>/<run-id>")] = "ensemble",
    runs_dir: Annotated[Path | None, typer.Option(help="where the ensemble's run folder goes")] = None,
) -> None:
    """Combine trained runs' test predictions; report the ensemble beside each member; write a run folder."""

    def body() -> None:
        from dlx.ensemble import ensemble
        from dlx.progress import pct

        s = ensemble(list(paths), top=top, by=by, method=method, name=name, runs_dir=runs_dir)
        for m in s["members"]:
            _err(f"  member {m['run']} ({m['model']}): test {pct(m['test_acc'])}")
        _err(f"ensemble ({s['method']}, {len(s['members'])} runs): test {pct(s['test_acc'])}; best member "
             f"{pct(s['best_member_test_acc'])}; wrote {s['run_dir']}")  # fmt: skip

    guarded(body)


@app.command(name="import-weights")
def import_weights(
    source: Annotated[str, typer.Argument(help="whose weights: book (Deep Learning from Scratch, chapter 8)")],
    file: Annotated[Path, typer.Argument(help="the book's deep_convnet_params.pkl")],
    output: Annotated[Path, typer.Option(help="the run folder to write")] = Path("runs/mnist_deep_book/imported"),
    experiment: Annotated[
        Path | None, typer.Option(help="the experiment its config.yaml comes from (default: the book's recipe)")
    ] = None,
) -> None:
    """Turn the book's trained DeepConvNet weights into a dlx run folder (dlx eval, predict, export use it)."""

    def body() -> None:
        from dlx.book_weights import import_book
        from dlx.errors import DlxError

        if source != "book":
            raise DlxError(f"import-weights {source!r}: the one source known is 'book'")
        folder = import_book(file, output, experiment)
        _err(f"wrote {folder} (config.yaml, checkpoints/best.pt, summary.json); measure it: dlx eval {folder}")

    guarded(body)

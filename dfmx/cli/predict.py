"""``dfmx-predict`` / ``python -m dfmx.cli.predict``: score new images with a saved model.

    dfmx-predict outputs/2026-11-29/10-00-00-3fa2c1/model images/ more.png --output preds/

writes ``preds/predictions.csv`` (path, score, prediction) and overlays of the
highest-scored images (``preds/overlays/``), and prints a short summary. The output folder
is checked before the model is loaded; the results replace those of an earlier prediction
there only once every file is written (:mod:`dfmx.cli.predict_output`).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dfmx.errors import USER_ERRORS, UserError, describe

if TYPE_CHECKING:
    from dfmx.cli.predict_output import PredictionFolder
    from dfmx.engine.torch_model import DFMModel


class MissingPluginError(UserError):
    """A saved model needs a plugin that is not installed here."""


def _whole_number(minimum: int):
    """An argparse type: an int >= ``minimum``, else argparse's usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}; got {text!r}")
        return value

    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfmx-predict",
        description="Score images with a model saved by a dfmx run (its model/ folder).",
    )
    parser.add_argument("model", help="saved model folder (contains model.json)")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (recursive)")
    parser.add_argument("--output", "-o", default="predictions",
                        help="output folder (default: ./predictions)")
    parser.add_argument("--threshold", type=_finite, default=None,
                        help="decision threshold (default: the one saved with the model)")
    parser.add_argument("--batch-size", type=_whole_number(1), default=16,
                        help="images per backbone call (default: 16)")
    parser.add_argument("--overlays", type=_whole_number(0), default=8,
                        help="overlays of the N highest-scored images (0: none)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def missing_plugin_message(model_dir: str | Path) -> str | None:
    """Which plugin of the model saved in ``model_dir`` is not installed, and the package
    (name and version, as recorded at save time) that provides it; ``None`` when every
    plugin the model names is installed, or the file is for :func:`load_model` to judge."""
    import json

    from dfmx import registry
    from dfmx.experiment.saved_model import CONFIG

    folder = Path(model_dir)
    try:
        raw = json.loads((folder if folder.is_file() else folder / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    record = raw.get("model", raw)  # format 1 kept the record at the top level
    packages = raw.get("plugin_packages")
    packages = packages if isinstance(packages, dict) else {}
    for kind, name in (("scorer", record.get("score_type")), ("pooling", record.get("pooling"))):
        if not isinstance(name, str) or name in registry.names(kind):
            continue
        package = packages.get(kind)
        if isinstance(package, str) and " " in package:
            dist, _, version = package.partition(" ")
            how = (f"it comes from the package {package}: install it "
                   f"(pip install '{dist}=={version}') and run again")
        else:
            how = ("install the package that registers it (entry point "
                   f"'{name}' in group {registry.GROUPS[kind]}) and run again")
        installed = ", ".join(registry.names(kind)) or "none"
        return (f"the model in {model_dir} needs the {kind} plugin '{name}', which is not "
                f"installed here; {how}. Installed {kind}s: {installed}")
    return None


def _load(model_dir: str) -> DFMModel:
    from dfmx.experiment.saved_model import load_model

    message = missing_plugin_message(model_dir)
    if message is not None:
        raise MissingPluginError(message)
    return load_model(model_dir)


def run(args: argparse.Namespace) -> Path:
    """Score the inputs and write the outputs; returns the CSV path."""
    from dfmx.cli.predict_output import PredictionFolder

    target = PredictionFolder(args.output)  # before any work: a bad --output stops here
    try:
        return _predict(args, target)
    finally:
        target.discard()


def _predict(args: argparse.Namespace, target: PredictionFolder) -> Path:
    """Score into ``target``'s staging folder, then move the results into place."""
    from dfmx import startup_gc
    from dfmx.cli.predict_output import CSV_NAME, OVERLAYS_NAME
    from dfmx.experiment.overlays import write_prediction_overlays
    from dfmx.experiment.predict import expand_inputs, predict_images
    from dfmx.path_text import path_text

    model = _load(args.model)
    startup_gc.resume()
    paths = expand_inputs(args.inputs)
    # Images are resized to the model's size: its PCA is fitted on that feature grid.
    result = predict_images(model, paths, batch_size=args.batch_size,
                            keep_maps=args.overlays > 0)
    if args.threshold is not None:
        result.threshold = args.threshold
    csv_path = target.staging / CSV_NAME
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score", "prediction"])
        for path, score, pred in zip(result.paths, result.scores, result.predictions,
                                     strict=True):
            verdict = "" if np.isnan(result.threshold) else ("anomalous" if pred else "normal")
            writer.writerow([path_text(path), repr(float(score)), verdict])
    size = model.metadata.get("image_size")
    write_prediction_overlays(target.staging / OVERLAYS_NAME, result.paths, result.scores,
                              result.maps, result.threshold, size, k=args.overlays)
    n_anomalous = int(result.predictions.sum()) if not np.isnan(result.threshold) else None
    replaced = target.commit()
    csv_path = target.folder / CSV_NAME
    if replaced:
        print(f"replaced {replaced} earlier file(s) in {target.folder} "
              f"({CSV_NAME}, {OVERLAYS_NAME}/)")
    print(f"scored {len(paths)} image(s) with {args.model}; "
          + (f"{n_anomalous} predicted anomalous at threshold {result.threshold:.6g}; "
             if n_anomalous is not None else "no threshold known; ")
          + f"wrote {csv_path}")
    return csv_path


def main(argv: list[str] | None = None) -> int:
    from dfmx import interrupts, startup_gc
    from dfmx.allocator import keep_freed_memory

    startup_gc.pause()  # until the model is loaded: start-up is imports
    previous = interrupts.install()
    keep_freed_memory()
    try:
        return _main(build_parser().parse_args(argv))
    finally:
        interrupts.restore(previous)
        startup_gc.resume()  # where it stopped before the model was loaded


def _main(args: argparse.Namespace) -> int:
    from dfmx import interrupts
    from dfmx.system_errors import as_user_error

    try:
        try:
            run(args)
        except Exception as caught:  # library code may raise another error for a Ctrl-C
            interrupt = interrupts.as_interrupt(caught)
            if interrupt is not caught:
                raise interrupt from caught
            raise
    except KeyboardInterrupt as exc:
        print(f"dfmx-predict: stopped by {interrupts.signal_name(exc)}; earlier results in "
              f"{args.output} are unchanged", file=sys.stderr)
        return interrupts.exit_code(exc)
    except Exception as exc:
        exc = as_user_error(exc, f"the output folder {args.output}",
                            "name another folder with --output",
                            "use a smaller --batch-size")
        if args.debug or not isinstance(exc, USER_ERRORS):
            raise
        print(f"dfmx-predict: {describe(exc, '--debug')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

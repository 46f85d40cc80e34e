"""The `vae-mnist` command: fetch data and run the pipeline locally.

vae-mnist data fetch [--dataset mnist] [--source auto] [--path DIR]
vae-mnist run [--dataset mnist] [--input-dir DIR] [--output-dir outputs] [--no-cache]
"""

from __future__ import annotations

import argparse
import json
import sys

import pipeline  # noqa: F401  (quiets import-time noise before TF loads)
from components import datasets, fetch
from components.idx_format import IdxError
from model.config import PRESETS
from pipeline.config import DEFAULT_BEAM_ARGS, PipelineConfig


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="mnist", choices=sorted(datasets.DATASETS))
    parser.add_argument("--data-root", default="data", help="datasets go to DATA_ROOT/<dataset> (default: data)")
    parser.add_argument("--source", default="auto", choices=["auto", *fetch.SOURCES], help="where to fetch data from")
    parser.add_argument("--path", help="a local directory holding the IDX files or mnist.npz (source 'local')")


def _cmd_fetch(args: argparse.Namespace) -> int:
    fetch.fetch(datasets.get(args.dataset), args.data_root, source=args.source, path=args.path)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = PipelineConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        input_dir=args.input_dir,
        output_dir=args.output_dir,
        enable_cache=not args.no_cache,
        beam_args=tuple(args.beam_arg) if args.beam_arg else DEFAULT_BEAM_ARGS,
        preset=args.preset,
        vae_overrides=vae_overrides(args),
        max_neg_elbo=args.max_neg_elbo,
    )
    if not args.input_dir:
        fetch.fetch(config.dataset_spec, config.data_root, source=args.source, path=args.path)

    from tfx import v1 as tfx  # heavy imports: TFX, TF, Beam

    from pipeline import local_runner, run_report

    tfx_pipeline = local_runner.local_pipeline(config)
    print(f"Running {config.pipeline_name} on {config.input_base} -> {config.output_dir}")
    try:
        with run_report.ConsoleProgress(total=len(tfx_pipeline.components)):
            tfx.orchestration.LocalDagRunner().run(tfx_pipeline)
    finally:
        print(run_report.format_summary(*run_report.latest_run(config.metadata_path, config.pipeline_name)))
    return 0


def vae_overrides(args: argparse.Namespace) -> dict:
    """--set FIELD=VALUE pairs, values read as JSON (e.g. --set epochs=3), else as strings."""
    changes = {}
    for assignment in args.set or []:
        field, _, value = assignment.partition("=")
        try:
            changes[field] = json.loads(value)
        except json.JSONDecodeError:
            changes[field] = value  # a bare string, e.g. --set activation=elu
    return changes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-mnist", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="manage datasets").add_subparsers(dest="data_command", required=True)
    fetch_parser = data.add_parser("fetch", help="put a dataset's verified IDX files under --data-root")
    _add_data_args(fetch_parser)
    fetch_parser.set_defaults(func=_cmd_fetch)

    run = commands.add_parser("run", help="run the pipeline locally (LocalDagRunner, ML Metadata in SQLite)")
    _add_data_args(run)
    run.add_argument("--input-dir", help="read these IDX files instead of the fetched dataset (no checksum)")
    run.add_argument("--output-dir", default="outputs", help="pipeline root, ML Metadata, pushed models")
    run.add_argument("--no-cache", action="store_true", help="re-run every component")
    run.add_argument("--preset", default="tutorial", choices=list(PRESETS), help="model preset (model/config.py)")
    run.add_argument(
        "--set", action="append", metavar="FIELD=VALUE", help="override a VaeConfig field, repeatable: --set epochs=3"
    )
    run.add_argument("--max-neg-elbo", type=float, help="blessing bound in nats (default: the preset's)")
    run.add_argument(
        "--beam-arg",
        action="append",
        help=f"a Beam pipeline argument, repeatable (default: {' '.join(DEFAULT_BEAM_ARGS)})",
    )
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (fetch.FetchError, IdxError, ValueError) as err:
        print(f"vae-mnist: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a failed component: say which problem, not a Beam traceback
        from components.data_gate import DataAnomaliesError

        cause = err
        while cause is not None and not isinstance(cause, (DataAnomaliesError, IdxError)):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        print(f"vae-mnist: run stopped: {cause}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

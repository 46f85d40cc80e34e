"""The `vae-mnist` command: fetch data, run the pipeline locally, query the served model.

Commands:
- vae-mnist data fetch [--dataset mnist] [--source auto] [--path DIR]
- vae-mnist data spans --spans N --output DIR [--drift SPAN:KIND[=VALUE]]
- vae-mnist run [--preset detector] [--set FIELD=VALUE] [--input-dir DIR] [--output-dir outputs] [--no-cache]
                [--serving-root DIR|s3://...|gs://...] [--warm-start] [--accept-drift] [--release direct|canary]
- vae-mnist serving list [--card VERSION] | promote | rollback [--to VERSION] | pin VERSION | unpin
                 [--output-dir outputs] [--serving-root ...]
- vae-mnist serving mirror --serving-root s3://... --to DIR [--every SECONDS]
- vae-mnist predict [--server URL | --grpc HOST:PORT | --model-dir DIR] [--label NAME] [--signature NAME] [--count N]
- vae-mnist kubeflow compile --image IMAGE --pipeline-root gs://|s3://... --input-dir ... --serving-root ...
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import os
import re
import sys
import time

import numpy as np

import pipeline  # noqa: F401  (quiets import-time noise before TF loads)
from components import datasets, fetch, object_store
from components.idx_format import IdxError
from model.config import PRESETS, VaeConfig
from pipeline import stack
from pipeline.beam import DEFAULT_PROFILE as DEFAULT_BEAM_PROFILE
from pipeline.beam import PROFILES as BEAM_PROFILES
from pipeline.beam import beam_args
from pipeline.config import RELEASE_POLICIES, PipelineConfig
from pipeline.run_lock import OutputDirBusy, output_dir_lock

EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: another run holds the output directory; try again later


def _own_version() -> str:
    from importlib import metadata

    return metadata.version("vae-mnist")


def _default(field: str):
    """A PipelineConfig field's default: the flags show the config's defaults, never a copy."""
    return PipelineConfig.__dataclass_fields__[field].default


def _pipeline_config(args: argparse.Namespace, **fields) -> PipelineConfig:
    """The PipelineConfig of ``run`` and ``kubeflow compile``: the data and model flags both
    take (``_add_model_args``), and ``fields`` from the command's own."""
    return PipelineConfig(
        dataset=args.dataset,
        preset=args.preset,
        vae_overrides=VaeConfig.parse_overrides(args.set),
        bounds=VaeConfig.parse_overrides(args.bound, flag="--bound"),
        span_window=args.span_window,
        warm_start=args.warm_start,
        accept_drift=args.accept_drift,
        release_policy=args.release,
        **fields,
    )


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default=_default("dataset"), choices=sorted(datasets.DATASETS))
    parser.add_argument(
        "--data-root", default=_default("data_root"), help="datasets go to DATA_ROOT/<dataset> (default: %(default)s)"
    )
    parser.add_argument("--source", default="auto", choices=["auto", *fetch.SOURCES], help="where to fetch data from")
    parser.add_argument("--path", help="a local directory holding the IDX files or mnist.npz (source 'local')")


def _cmd_fetch(args: argparse.Namespace) -> int:
    fetch.fetch(datasets.get(args.dataset), args.data_root, source=args.source, path=args.path)
    return 0


def _cmd_spans(args: argparse.Namespace) -> int:
    from components import spans

    drifts = [spans.Drift.parse(text) for text in args.drift or []]  # bad flags fail before any fetch
    spec = datasets.get(args.dataset)
    source = fetch.fetch(spec, args.data_root, source=args.source, path=args.path)
    fashion = None
    if any(drift.kind == "fashion" for drift in drifts):
        fashion = fetch.fetch(datasets.FASHION_MNIST, args.data_root)
    written = spans.write_spans(source, args.output, args.spans, drifts, spec=spec, fashion_dir=fashion)
    for span, directory in written.items():
        drifted = ", ".join(d.kind + (f"={d.value:g}" if d.value is not None else "") for d in drifts if d.span == span)
        print(f"span {span}: {directory}" + (f" (drift: {drifted})" if drifted else ""))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = _pipeline_config(
        args,
        data_root=args.data_root,
        input_dir=args.input_dir,
        output_dir=args.output_dir,
        serving_root=args.serving_root,
        spans=args.spans or None,
        enable_cache=not args.no_cache,
        beam_args=tuple(args.beam_arg) if args.beam_arg else beam_args(args.beam_profile),
    )
    config.check_local_run_paths()  # before the lock makes the output directory
    with output_dir_lock(config.output_dir):
        from pipeline.local_runner import preflight  # TFX, Beam: after a busy directory is refused

        preflight(config)  # before the fetch and any work
        if not args.input_dir:
            fetch.fetch(config.dataset_spec, config.data_root, source=args.source, path=args.path)
        return _run_locally(config)


def _run_locally(config: PipelineConfig) -> int:
    from pipeline import local_runner, serving, summary  # heavy imports: TFX, TF, Beam

    print(f"Running {config.pipeline_name} (preset {config.preset}) on {config.input_base} -> {config.output_dir}")
    try:
        local_runner.run_locally(config)
    finally:
        for line in summary.outcome_lines(local_runner.last_run(config), config.serving_model_dir):
            print(line)
    if object_store.is_s3(config.serving_root):
        mirror = f"vae-mnist serving mirror --serving-root {config.serving_root} --to DIR"
        print(f"Serve it: kubeflow/serving/tf-serving-s3.yaml, or `{mirror}` and TF Serving on DIR")
    elif os.path.isdir(config.serving_model_dir):
        from components import serving_layout

        print(f"Serve it: {serving.docker_command(config.serving_root)}")
        print(f"  (config {serving_layout.write_models_config(config.serving_model_dir)})")
    return 0


def _serving_model_dir(args: argparse.Namespace) -> tuple[str, str]:
    """(model directory, ML Metadata path) of the output directory the runs used."""
    config = PipelineConfig(output_dir=args.output_dir, serving_root=args.serving_root, model_name=args.model_name)
    return config.serving_model_dir, config.metadata_path


def _cmd_serving_list(args: argparse.Namespace) -> int:
    from pipeline import served_versions

    model_dir, metadata_path = _serving_model_dir(args)
    if args.card is not None:
        print(served_versions.card(model_dir, args.card))
        return 0
    print(served_versions.format_versions(served_versions.pushed_versions(model_dir, metadata_path), model_dir))
    return 0


def _release(args: argparse.Namespace, action: str) -> int:
    """promote, rollback: the steps written in order (components/releases.py), then the labels."""
    from components import releases

    model_dir, _ = _serving_model_dir(args)
    with output_dir_lock(args.output_dir):  # not while a run pushes
        if action == "promote":
            steps = releases.plan_promote(model_dir)
        else:
            steps = releases.plan_rollback(model_dir, args.to)
        loading = sorted(set(steps[0].versions) - set(releases.current(model_dir).versions)) if len(steps) > 1 else []
        settle = releases.SETTLE_SECONDS if args.settle is None else args.settle
        if loading:
            print(
                f"Loading version {loading[0]} first; the label moves once TF Serving has read that "
                f"(in {settle:g} s: --settle)",
                flush=True,
            )
        releases.apply(model_dir, steps, action, settle)
    done = {"promote": "Promoted", "rollback": "Rolled back"}[action]
    print(f"{done} {model_dir}: {releases.describe(model_dir)}")
    return 0


def _cmd_serving_promote(args: argparse.Namespace) -> int:
    return _release(args, "promote")


def _cmd_serving_rollback(args: argparse.Namespace) -> int:
    return _release(args, "rollback")


def _cmd_serving_pin(args: argparse.Namespace) -> int:
    from components import serving_layout

    model_dir, _ = _serving_model_dir(args)
    with output_dir_lock(args.output_dir):  # not while a run pushes
        path = serving_layout.pin(model_dir, args.version)
    print(f"Pinned {model_dir} to version {args.version} in {path}; TF Serving switches within its poll interval")
    return 0


def _cmd_serving_unpin(args: argparse.Namespace) -> int:
    """No pin and no release labels: TF Serving serves the newest version again."""
    from components import releases, serving_layout

    model_dir, _ = _serving_model_dir(args)
    with output_dir_lock(args.output_dir):
        labels = {} if args.force else serving_layout.release_labels(model_dir)
        if labels:  # through the release history, so that rollback starts afresh
            releases.apply(model_dir, releases.plan_unpin(model_dir), "unpin")
            print(f"Dropped the release labels ({', '.join(sorted(labels))}): requests naming them now fail")
            path = serving_layout.models_config_path(model_dir)
        else:
            path = serving_layout.write_models_config(model_dir, pinned=None, afresh=args.force, labels={})
    print(f"Unpinned {model_dir} in {path}: TF Serving serves version {serving_layout.served_version(model_dir)}")
    return 0


def _cmd_serving_mirror(args: argparse.Namespace) -> int:
    from components import serving_layout

    while True:
        try:
            for line in serving_layout.mirror(args.serving_root, args.to):
                print(line, flush=True)
        except OSError as err:
            if not args.every:
                raise
            # A sidecar outlives a store outage: TF Serving keeps serving what is already here.
            print(f"vae-mnist: mirror: {err} (again in {args.every:g} s)", file=sys.stderr, flush=True)
        if not args.every:
            return 0
        time.sleep(args.every)


def _cmd_predict(args: argparse.Namespace) -> int:
    from pipeline import serving

    if args.request:
        request = _read_request(args.request, args.max_request_mb, args.max_rows)
    else:
        images, labels = _test_images(args.data_root, args.count)
        request = serving.rest_request(images, args.signature, labels)
    if args.model_dir:
        response = serving.predict_in_process(args.model_dir, request, label=args.label)
    elif args.grpc:
        response = serving.predict_grpc(args.grpc, args.model_name, request, timeout=args.timeout, label=args.label)
    else:
        response = serving.predict_rest(args.server, args.model_name, request, timeout=args.timeout, label=args.label)
    print(json.dumps(_strict_json(response), sort_keys=True) if args.full else _brief(response))
    return 0


def _strict_json(value):
    """A response as strict JSON: NaN and infinities (which Python's json would print as the
    invalid ``NaN``) become null, so what we print always parses."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_json(v) for v in value]
    return value


def _read_request(path: str, max_mb: float, max_rows: int):
    """A request file, bounded before it costs memory: its size, then its rows (each row becomes
    tensors and an answer of 784 numbers), and JSON that Python's parser cannot take."""
    from pipeline import rest_dialect

    size = os.path.getsize(path)
    if size > max_mb * (1 << 20):
        raise ValueError(f"{path} holds {size / (1 << 20):.1f} MB; the limit is {max_mb:g} MB (--max-request-mb)")
    with open(path, "rb") as f:
        try:
            request = json.loads(f.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a JSON request: {err}") from None
        except RecursionError:
            raise ValueError(f"{path} is not a JSON request: nested too deeply") from None
    rows = rest_dialect.row_count(request)
    if rows > max_rows:
        raise ValueError(f"{path} holds {rows:,} rows; the limit is {max_rows:,} per request (--max-rows)")
    return request


def _test_images(data_root: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` MNIST test images (pixel rows) and their labels."""
    directory = fetch.fetch(datasets.MNIST, data_root, log=lambda message: None)
    images, labels = datasets.MNIST.read_split(directory, "eval", stop=count)
    return images.reshape(len(images), -1).astype("int64"), labels.astype("int64")


def _brief(response: dict) -> str:
    """Scalars as they are, long vectors as their length: a readable digest of a response."""

    def shorten(value):
        array = np.asarray(value)
        if array.ndim > 1 or array.size > 4:
            return f"<{'x'.join(map(str, array.shape))} values>"
        if array.dtype.kind == "f":  # numbers to 3 decimals; booleans, integers and text as they are
            array = np.round(array, 3)
        return _strict_json(array.tolist())

    rows = response["predictions"] if "predictions" in response else [response.get("outputs", {})]
    return "\n".join(
        json.dumps(
            {k: shorten(v) for k, v in row.items()} if isinstance(row, dict) else shorten(row),
            allow_nan=False,
            sort_keys=True,
        )
        for row in rows
    )


def _cmd_kubeflow_compile(args: argparse.Namespace) -> int:
    from pipeline.kubeflow_runner import ClusterConfig, compile_pipeline

    options = dict(option.partition("=")[::2] for option in args.beam_option or [])
    options.setdefault("image", args.image)
    config = _pipeline_config(
        args,
        input_dir=args.input_dir,
        pipeline_root=args.pipeline_root,
        serving_root=args.serving_root,
        beam_args=beam_args(args.beam_profile, **options),
        spans=args.spans or None,
    )
    store = {"s3_endpoint": args.s3_endpoint, "s3_region": args.s3_region, "s3_secret": args.s3_secret}
    if args.s3_secret_keys is not None:
        store["s3_secret_keys"] = tuple(args.s3_secret_keys.split(","))
        if len(store["s3_secret_keys"]) != 2 or not all(store["s3_secret_keys"]):
            raise ValueError(f"--s3-secret-keys must be ACCESS,SECRET (two key names), got {args.s3_secret_keys!r}")
    cluster = ClusterConfig(
        image=args.image,
        trainer_image=args.trainer_image,
        gpus=args.gpus,
        gpu_resource=args.gpu_type,
        **{name: value for name, value in store.items() if value is not None},
    )
    print(f"wrote {compile_pipeline(config, cluster, args.output, target=args.target)}")
    return 0


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default=_default("preset"), choices=list(PRESETS), help="model preset (model/config.py)"
    )
    parser.add_argument(
        "--set", action="append", metavar="FIELD=VALUE", help="override a VaeConfig field, repeatable: --set epochs=3"
    )
    parser.add_argument(
        "--span-window",
        type=_positive_int,
        default=_default("span_window"),
        help="from span-<N>/ input, train on the newest K spans",
    )
    parser.add_argument(
        "--warm-start", action="store_true", help="retrain from the served model's weights (same architecture)"
    )
    parser.add_argument(
        "--accept-drift", action="store_true", help="let a span the drift gate would stop through, for this run"
    )
    parser.add_argument(
        "--release",
        default=_default("release_policy"),
        choices=RELEASE_POLICIES,
        help="a blessed model is served (direct) or labelled canary beside stable (default: %(default)s)",
    )
    parser.add_argument(
        "--bound",
        action="append",
        metavar="FIELD=VALUE",
        help="override a blessing bound (model/bounds.py), repeatable: --bound neg_elbo=160, "
        "--bound pixel_mse_per_digit=0.05 (every digit) or =[...] (one per digit)",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _seconds(text: str) -> float:
    """A wait: 0 or more seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(  # raw: the --version line is not wrapped
        prog="vae-mnist", description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"vae-mnist {_own_version()}: {stack.describe()}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="manage datasets").add_subparsers(dest="data_command", required=True)
    fetch_parser = data.add_parser("fetch", help="put a dataset's verified IDX files under --data-root")
    _add_data_args(fetch_parser)
    fetch_parser.set_defaults(func=_cmd_fetch)
    spans_parser = data.add_parser("spans", help="cut a dataset into numbered spans (<output>/span-N/), some drifted")
    _add_data_args(spans_parser)
    spans_parser.add_argument("--spans", type=_positive_int, required=True, help="how many spans")
    spans_parser.add_argument("--output", required=True, help="the spanned directory to write (must hold no spans)")
    spans_parser.add_argument(
        "--drift",
        action="append",
        metavar="SPAN:KIND[=VALUE]",
        help="drift a span, repeatable: 3:fashion=0.5, 3:invert, 3:rotate=90, 3:without=4 (components/spans.py)",
    )
    spans_parser.set_defaults(func=_cmd_spans)

    run = commands.add_parser("run", help="run the pipeline locally (LocalDagRunner, ML Metadata in SQLite)")
    _add_data_args(run)
    run.add_argument("--input-dir", help="read these IDX files instead of the fetched dataset (no checksum)")
    run.add_argument("--output-dir", default=_default("output_dir"), help="pipeline root, ML Metadata, pushed models")
    run.add_argument("--serving-root", help="where pushed models go (default: <output-dir>/serving; s3:// or gs://)")
    run.add_argument(
        "--spans", action="store_true", help="--input-dir holds span-<N>/ directories (found by itself when local)"
    )
    run.add_argument("--no-cache", action="store_true", help="re-run every component")
    _add_model_args(run)
    run.add_argument(
        "--beam-profile", default=DEFAULT_BEAM_PROFILE, choices=BEAM_PROFILES[:2], help="how the data stages run"
    )
    run.add_argument("--beam-arg", action="append", help="a Beam pipeline argument, repeatable (replaces the profile)")
    run.set_defaults(func=_cmd_run)

    serving_parser = commands.add_parser(
        "serving", help="pushed versions: list them, release labels (promote, rollback), pin, unpin"
    )
    serving_commands = serving_parser.add_subparsers(dest="serving_command", required=True)
    for name, func, help_text in (
        ("list", _cmd_serving_list, "the pushed versions, their labels and evaluation (ML Metadata)"),
        ("promote", _cmd_serving_promote, "the canary becomes stable; the old stable is unloaded"),
        ("rollback", _cmd_serving_rollback, "stable goes back to the stable version before it"),
        ("pin", _cmd_serving_pin, "make TF Serving serve VERSION (models.config), whatever is newer"),
        ("unpin", _cmd_serving_unpin, "no pin, no labels: serve the newest version again"),
    ):
        command = serving_commands.add_parser(name, help=help_text)
        if name == "list":
            command.add_argument(
                "--card", type=_positive_int, metavar="VERSION", help="print that version's model card"
            )
        if name == "pin":
            command.add_argument("version", type=_positive_int, help="a pushed version (see: vae-mnist serving list)")
        if name == "rollback":
            command.add_argument(
                "--to", type=_positive_int, metavar="VERSION", help="this version, not the previous stable"
            )
        if name in ("promote", "rollback"):
            command.add_argument(
                "--settle",
                type=_seconds,
                help="seconds between loading a version and moving a label onto it "
                "(default: TF Serving's config poll + 5; 0 when no TF Serving is running)",
            )
        if name == "unpin":
            command.add_argument(
                "--force", action="store_true", help="write models.config afresh (a corrupt one; other entries go)"
            )
        command.add_argument("--output-dir", default=_default("output_dir"), help="the runs' output directory")
        command.add_argument("--serving-root", help="default: <output-dir>/serving")
        command.add_argument("--model-name", default=_default("model_name"))
        command.set_defaults(func=func)
    mirror = serving_commands.add_parser(
        "mirror", help="copy a serving root in a bucket to a local directory TF Serving reads (it has no s3://)"
    )
    mirror.add_argument("--serving-root", required=True, help="s3://... (or any serving root)")
    mirror.add_argument("--to", required=True, metavar="DIR", help="the local serving root (TF Serving's /models)")
    mirror.add_argument("--every", type=float, help="keep mirroring, a pass every SECONDS (default: one pass)")
    mirror.set_defaults(func=_cmd_serving_mirror)

    predict = commands.add_parser(
        "predict", help="send TF Serving requests (REST, gRPC) or answer them from the pushed model in-process"
    )
    target = predict.add_mutually_exclusive_group()
    target.add_argument("--server", default="http://localhost:8501", help="TF Serving REST address")
    target.add_argument("--grpc", metavar="HOST:PORT", help="TF Serving gRPC address, e.g. localhost:8500")
    target.add_argument("--model-dir", help="the pushed model (<serving_root>/<model_name>, or one version)")
    predict.add_argument("--model-name", default=_default("model_name"))
    predict.add_argument(
        "--label", help="the version a release label names (stable, canary); default: the newest loaded"
    )
    predict.add_argument("--signature", default="serving_default")
    predict.add_argument("--request", help="a JSON file in TF Serving's REST format (default: MNIST test images)")
    predict.add_argument("--count", type=_positive_int, default=3, help="how many MNIST test images to send")
    predict.add_argument("--data-root", default=_default("data_root"))
    predict.add_argument("--full", action="store_true", help="print the whole response as JSON")
    predict.add_argument(
        "--max-request-mb", type=_positive_float, default=64.0, help="refuse a larger --request (default: %(default)s)"
    )
    predict.add_argument(
        "--max-rows", type=_positive_int, default=10_000, help="refuse a --request of more rows (default: %(default)s)"
    )
    predict.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="seconds to wait for TF Serving (default: %(default)s)"
    )
    predict.set_defaults(func=_cmd_predict)

    kubeflow = commands.add_parser("kubeflow", help="Kubeflow Pipelines").add_subparsers(
        dest="kf_command", required=True
    )
    compile_ = kubeflow.add_parser(
        "compile", help="compile the pipeline for Kubeflow Pipelines (YAML) or Vertex AI Pipelines (JSON)"
    )
    compile_.add_argument(
        "--target", default="kfp", choices=["kfp", "vertex"], help="open-source KFP 2.x (default) or Vertex AI"
    )
    compile_.add_argument("--image", required=True, help="the project's container image (kubeflow/Dockerfile)")
    compile_.add_argument("--trainer-image", help="the Trainer's image, e.g. a CUDA build (default: --image)")
    compile_.add_argument("--gpus", type=int, default=1, help="GPUs for the Trainer (0: train on CPU)")
    compile_.add_argument(
        "--gpu-type", help="the GPU resource (default: nvidia.com/gpu on KFP, NVIDIA_TESLA_T4 on Vertex)"
    )
    compile_.add_argument(
        "--pipeline-root", required=True, help="gs://, s3:// or minio://... for artifacts (kfp; vertex: gs://)"
    )
    compile_.add_argument("--input-dir", required=True, help="where the cluster reads the IDX files (gs:// or s3://)")
    compile_.add_argument("--spans", action="store_true", help="--input-dir holds span-<N>/ directories")
    compile_.add_argument("--serving-root", required=True, help="where Pusher writes <model_name>/<version>/")
    compile_.add_argument(
        "--s3-endpoint",
        help="the S3 store of an s3:// input dir or serving root "
        f"(default: KFP's own, {object_store.KFP_ENDPOINT}; '' for AWS S3)",
    )
    compile_.add_argument("--s3-region", help=f"(default: {object_store.DEFAULT_REGION})")
    compile_.add_argument(
        "--s3-secret",
        help=f"the Kubernetes secret with the store's keys (default: KFP's own, {object_store.KFP_SECRET})",
    )
    compile_.add_argument(
        "--s3-secret-keys",
        metavar="ACCESS,SECRET",
        help="the secret's keys of the access key and the secret key "
        f"(default: {','.join(object_store.KFP_SECRET_KEYS)})",
    )
    compile_.add_argument("--dataset", default=_default("dataset"), choices=sorted(datasets.DATASETS))
    compile_.add_argument(
        "--beam-profile", default=DEFAULT_BEAM_PROFILE, choices=BEAM_PROFILES, help="runner of the data stages"
    )
    compile_.add_argument(
        "--beam-option",
        action="append",
        metavar="KEY=VALUE",
        help="e.g. job_endpoint=flink-jobserver:8099, project=...",
    )
    _add_model_args(compile_)
    compile_.add_argument(
        "--output", default="kubeflow/vae-mnist.yaml", help="the file (.yaml for kfp, .json for vertex)"
    )
    compile_.set_defaults(func=_cmd_kubeflow_compile)
    return parser


EXIT_INTERRUPTED = 130  # as a shell reports a command ended by SIGINT
# Words that say what went wrong, inside a longer (often wrapped) message: Beam and TensorFlow
# wrap an OSError's text in their own.
_TELLING = re.compile(r"\[Errno \d+\][^\n'\"]*|No space left on device|File too large|Resource exhausted[^\n]*")


# A foreign message's line can be a page long (Beam's usage text, a serialized proto); ours end in
# the advice, so a cut keeps both ends.
_LINE_CHARS = 600


def _one_line(text: str) -> str:
    """The line of an error message that names the problem, its middle cut if it is too long."""
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [text]
    telling = [line for line in lines if _TELLING.search(line)]
    line = (telling or lines)[0]
    if len(line) <= _LINE_CHARS:
        return line
    half = (_LINE_CHARS - 5) // 2
    return f"{line[:half]} ... {line[-half:]}"


def _failure(err: BaseException) -> tuple[str, int] | None:
    """What a user sees of an error that stopped a command: one line and the exit code. None for
    an error of ours (a bug), whose traceback is the useful report."""
    from components.data_gate import DataAnomaliesError
    from components.drift_gate import DataDriftError
    from components.object_store import ObjectStoreError
    from model.trainer import TrainingDivergedError

    chain, cause = [], err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    runner = sys.modules.get("pipeline.local_runner")  # loaded if the error came from a run
    component = next(filter(None, (runner.failed_component(e) for e in chain)), None) if runner else None
    where = f"{component}: " if component else ""
    if isinstance(err, (fetch.FetchError, IdxError, ValueError, OSError)):
        return f"vae-mnist: error: {where}{_one_line(str(err))}", 2
    stops = (DataAnomaliesError, DataDriftError, IdxError, TrainingDivergedError, ObjectStoreError)
    for cause in chain:
        if isinstance(cause, stops):
            return f"vae-mnist: run stopped: {cause}", 1
    # The world, not our code: files and disks, the ML Metadata store, TensorFlow's runtime.
    world = [ValueError, OSError]
    for module, name in (("tensorflow", "errors.OpError"), ("ml_metadata.errors", "StatusError")):
        if module in sys.modules:
            world.append(operator.attrgetter(name)(sys.modules[module]))
    for cause in chain:
        if isinstance(cause, tuple(world)):
            return f"vae-mnist: error: {where}{_one_line(getattr(cause, 'message', None) or str(cause))}", 2
    if component and _TELLING.search(str(err)):  # an OSError that a runner wrapped as text
        return f"vae-mnist: error: {where}{_one_line(str(err))}", 2
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's Python deprecation notices (from TFX and TFMA internals) need no action.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except OutputDirBusy as err:
        print(f"vae-mnist: error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except KeyboardInterrupt as err:  # pipeline/local_runner.py:RunInterrupted names the component
        component = getattr(err, "component", None)
        if component:
            print(f"vae-mnist: run interrupted during {component}; run the same command to resume", file=sys.stderr)
        else:
            print("vae-mnist: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        failure = _failure(err)
        if failure is None:
            raise
        print(failure[0], file=sys.stderr)
        return failure[1]


if __name__ == "__main__":
    sys.exit(main())

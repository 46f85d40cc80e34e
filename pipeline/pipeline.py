"""create_pipeline: the one wiring of vae-mnist's components, shared by every runner."""

from __future__ import annotations

import json
import os
import uuid

from ml_metadata.proto import metadata_store_pb2

# Not `from tfx import v1 as tfx`: components/tfx_dsl.py says why.
from tfx.components import ExampleValidator, StatisticsGen, Trainer, Transform
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import pusher_pb2, trainer_pb2

from components.data_gate import DataGate
from components.drift_gate import DriftGate
from components.evaluator import Evaluator
from components.idx_example_gen import TRAIN_SPLIT, VALIDATION_SPLIT, IdxExampleGen
from components.model_pictures import ModelPictures
from components.pusher import Pusher
from components.served_model import ServedModel
from components.span_scores import SpanScores
from pipeline.config import PipelineConfig
from pipeline.evaluation import eval_config


def code_revision() -> str:
    """The code a run ran, for the model card: ``git describe`` of this checkout (``-dirty`` with
    uncommitted changes), or the installed package's version outside a checkout (an image)."""
    import subprocess
    from importlib import metadata

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isdir(os.path.join(repo, ".git")):
        described = subprocess.run(
            ["git", "-C", repo, "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True, text=True
        )
        if described.returncode == 0:
            return described.stdout.strip()
    return f"vae-mnist {metadata.version('vae-mnist')}"


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    kubeflow_run_id: str | None = None,
) -> tfx_pipeline.Pipeline:
    """ExampleGen (train, valid, eval) -> StatisticsGen + curated schema -> ExampleValidator -> DataGate,
    and ServedModel (the model served now) -> SpanScores (the new span scored by it) -> DriftGate;
    both gates -> Transform -> Trainer (warm from the served model, if asked) -> Evaluator (against
    the served model) -> Pusher (blessed models only), and ModelPictures beside the Evaluator.

    The served model is looked up once, at the start: the same model scores the span, is the warm
    start and is the baseline (one run pushes to a serving root at a time; see serving_layout).

    ServedModel must never answer from cache: it gets a fresh token per call (per local run), or
    ``kubeflow_run_id``, the run-id placeholder the Kubeflow compiler passes.
    """
    example_gen = IdxExampleGen(
        input_base=config.input_base,
        dataset=config.dataset_spec,
        records_per_shard=config.records_per_shard,
        validation_fraction=config.validation_fraction,
        spanned=config.reads_spans,
        span_window=config.span_window,
        # Locally TFX's driver finds new spans; Kubeflow's cache needs the run's id to miss.
        run_nonce=kubeflow_run_id if config.reads_spans else None,
    )
    statistics_gen = StatisticsGen(examples=example_gen.outputs["examples"])
    schema_importer = ImportSchemaGen(schema_file=config.schema_file)
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"]
    )
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"])
    transform = Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_importer.outputs["schema"],
        preprocessing_fn="model.features.preprocessing_fn",
        # Statistics of x / 255 would repeat StatisticsGen's and cost more than the scaling itself.
        disable_statistics=True,
        # Only the graph: the Trainer applies it as it reads ExampleGen's examples. Writing 784 floats
        # per image of every split, to be read back once, cost more than the scaling (issue 15).
        materialize=False,
    )
    served_model = ServedModel(
        serving_model_dir=config.serving_model_dir, lookup_nonce=kubeflow_run_id or uuid.uuid4().hex
    )
    # Scored whatever the gates decide: the images of a stopped span are the ones to look at.
    span_scores = SpanScores(
        examples=example_gen.outputs["examples"],
        served_model=served_model.outputs["model"],
        input_base=config.input_base,
        dataset=config.dataset,
    )
    drift_gate = DriftGate(
        scores=span_scores.outputs["scores"],
        thresholds=json.dumps(config.drift_gate_thresholds, sort_keys=True),
        accept_drift=config.accept_drift,
    )
    # No training on data either gate stopped.
    transform.add_upstream_node(data_gate)
    transform.add_upstream_node(drift_gate)
    warm_start = {"base_model": served_model.outputs["model"]} if config.warm_start else {}
    trainer = Trainer(
        run_fn="model.trainer.run_fn",
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_importer.outputs["schema"],
        # Model selection on the validation split; the eval split is the Evaluator's alone.
        train_args=trainer_pb2.TrainArgs(splits=[TRAIN_SPLIT]),
        eval_args=trainer_pb2.EvalArgs(splits=[VALIDATION_SPLIT]),
        custom_config={"vae": config.vae.to_dict(), "warm_start": config.warm_start},
        **warm_start,
    )
    model_pictures = ModelPictures(model=trainer.outputs["model"], examples=example_gen.outputs["examples"])
    evaluator = Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=served_model.outputs["model"],
        eval_config=eval_config(
            config.evaluation_bounds,
            config.regression_tolerance_nats,
            config.regression_tolerance_fraction,
            config.min_eval_images_per_digit,
        ),
        example_splits=["eval"],
    )
    pusher = Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=config.serving_model_dir)
        ),
        release={
            "policy": config.release_policy,
            "settle_seconds": config.release_settle_seconds,
            # What the model card names besides the artifacts (components/model_card.py).
            "preset": config.preset,
            "dataset": config.dataset,
            "pipeline_name": config.pipeline_name,
            "model_name": config.model_name,
            "code_revision": code_revision(),
            "pipeline_settings": {
                name: getattr(config, name)
                for name in (
                    "validation_fraction",
                    "span_window",
                    "warm_start",
                    "accept_drift",
                    "regression_tolerance_nats",
                    "regression_tolerance_fraction",
                    "min_eval_images_per_digit",
                )
            },
        },
        examples=example_gen.outputs["examples"],
        model_run=trainer.outputs["model_run"],
        evaluation=evaluator.outputs["evaluation"],
        baseline_model=served_model.outputs["model"],
    )

    return tfx_pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_importer,
            example_validator,
            data_gate,
            served_model,
            span_scores,
            drift_gate,
            transform,
            trainer,
            model_pictures,
            evaluator,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_args),
    )

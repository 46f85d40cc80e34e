"""create_pipeline: the one wiring of vae-mnist's components, shared by every runner."""

from __future__ import annotations

import uuid

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.data_gate import DataGate
from components.evaluator import Evaluator
from components.idx_example_gen import TRAIN_SPLIT, VALIDATION_SPLIT, IdxExampleGen
from components.model_pictures import ModelPictures
from components.pusher import Pusher
from components.served_model import ServedModel
from pipeline.config import PipelineConfig
from pipeline.evaluation import eval_config


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    lookup_nonce: str | None = None,
) -> tfx.dsl.Pipeline:
    """ExampleGen (train, valid, eval) -> StatisticsGen + curated schema -> ExampleValidator -> DataGate -> Transform ->
    Trainer -> Evaluator (against the model served now) -> Pusher (blessed models only), and
    ModelPictures beside the Evaluator.

    ``lookup_nonce`` keeps ServedModel out of the cache (default: a fresh token per call, i.e.
    per local run); the Kubeflow compiler passes the run-id placeholder instead.
    """
    example_gen = IdxExampleGen(
        input_base=config.input_base,
        dataset=config.dataset_spec,
        records_per_shard=config.records_per_shard,
        validation_fraction=config.validation_fraction,
        spanned=config.reads_spans,
        span_window=config.span_window,
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_importer = tfx.components.ImportSchemaGen(schema_file=config.schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"]
    )
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_importer.outputs["schema"],
        preprocessing_fn="model.features.preprocessing_fn",
        # Statistics of x / 255 would repeat StatisticsGen's and cost more than the scaling itself.
        disable_statistics=True,
    )
    transform.add_upstream_node(data_gate)  # no training on data the gate stopped
    trainer = tfx.components.Trainer(
        run_fn="model.trainer.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_importer.outputs["schema"],
        # Model selection on the validation split; the eval split is the Evaluator's alone.
        train_args=tfx.proto.TrainArgs(splits=[TRAIN_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[VALIDATION_SPLIT]),
        custom_config={"vae": config.vae.to_dict()},
    )
    model_pictures = ModelPictures(model=trainer.outputs["model"], examples=example_gen.outputs["examples"])
    served_model = ServedModel(
        serving_model_dir=config.serving_model_dir, lookup_nonce=lookup_nonce or uuid.uuid4().hex
    )
    # Looked up once the candidate exists: the baseline is what is served when the Evaluator
    # runs, not what was served before a long training, and a run the gate stopped reads nothing.
    served_model.add_upstream_node(trainer)
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
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_model_dir)
        ),
    )

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_importer,
            example_validator,
            data_gate,
            transform,
            trainer,
            model_pictures,
            served_model,
            evaluator,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_args),
    )

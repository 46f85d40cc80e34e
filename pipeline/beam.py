"""Beam arguments for the data stages (ExampleGen, StatisticsGen, Transform, Evaluator), per
environment. ``PipelineConfig.beam_args`` holds the result; this is the one place that knows how
each runner is addressed.

- ``direct``: Beam's DirectRunner in the component's own process, which is what Beam does with no
  arguments (``--direct_running_mode=in_memory``, one worker). On a 2-core machine it runs the
  data stages of a full-MNIST pipeline in 26 s against 48 s for ``direct_parallel``, whose worker
  processes each import TensorFlow and keep competing with the Trainer for the CPU afterwards
  (bench/pipeline_cost.py). It passes no arguments at all because TFX, given any Beam argument
  but none naming the workers' dependencies, copies its own installation and builds an sdist of
  it (``setup.py sdist`` in a subprocess) every time a Beam component starts, to ship to remote
  workers (tfx/utils/dependency_utils.py:make_beam_dependency_flags, called by
  tfx/dsl/components/base/base_beam_executor.py). In-process workers never use it; it cost about
  2 s per Beam component here (issue 15);
- ``direct_parallel``: the DirectRunner with one worker process per core, for machines with many;
- ``flink`` / ``spark``: a portable job server in the cluster (e.g. the Flink or Spark operator's),
  with the Python SDK harness as a sidecar (``--environment_type=EXTERNAL``) or in our image
  (``DOCKER``);
- ``dataflow``: Google Cloud Dataflow, with our container as the SDK image so the project's
  modules resolve on the workers.
"""

from __future__ import annotations

PROFILES = ("direct", "direct_parallel", "flink", "spark", "dataflow")
DEFAULT_PROFILE = "direct"  # PipelineConfig.beam_args' default

_REQUIRED = {
    "direct": (),
    "direct_parallel": (),
    "flink": ("job_endpoint",),
    "spark": ("job_endpoint",),
    "dataflow": ("project", "region", "temp_location", "image"),
}


def beam_args(profile: str, **options: str) -> tuple[str, ...]:
    """Pipeline arguments for a profile. Options: job_endpoint, environment_type,
    environment_config (flink/spark); project, region, temp_location, image (dataflow)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown Beam profile {profile!r}; choose one of {', '.join(PROFILES)}")
    missing = [name for name in _REQUIRED[profile] if not options.get(name)]
    if missing:
        raise ValueError(f"Beam profile {profile!r} needs {', '.join(missing)}")
    if profile == "direct":
        return ()
    if profile == "direct_parallel":
        return ("--direct_running_mode=multi_processing", "--direct_num_workers=0")
    if profile in ("flink", "spark"):
        environment = options.get("environment_type") or "EXTERNAL"
        args = [
            "--runner=PortableRunner",
            f"--job_endpoint={options['job_endpoint']}",
            f"--environment_type={environment}",
        ]
        if environment == "EXTERNAL":
            args.append(f"--environment_config={options.get('environment_config') or 'localhost:50000'}")
        elif environment == "DOCKER" and options.get("image"):
            args.append(f"--environment_config={options['image']}")
        return tuple(args)
    return (
        "--runner=DataflowRunner",
        f"--project={options['project']}",
        f"--region={options['region']}",
        f"--temp_location={options['temp_location']}",
        f"--sdk_container_image={options['image']}",
        "--experiments=use_runner_v2",
    )


def check_beam_args(args: tuple[str, ...] | list[str]) -> None:
    """Parses Beam arguments as Beam's PipelineOptions will, before any component runs: a bad one
    is one line here, not Beam's 118-line usage text from inside IdxExampleGen (argparse exits,
    and a SystemExit is no Exception, so the component would be left RUNNING)."""
    import contextlib
    import io

    from apache_beam.options.pipeline_options import PipelineOptions

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            PipelineOptions(list(args)).get_all_options()
    except SystemExit:
        lines = said.getvalue().strip().splitlines() or ["not valid"]
        raise ValueError(f"Beam argument: {lines[-1].split('error: ', 1)[-1]}") from None

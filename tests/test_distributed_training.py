"""Multi-replica and mixed-precision training, exercised on CPU: the Trainer's MirroredStrategy
path on 2 logical CPU devices, and its mixed_float16 path, in a fresh process
(tests/distributed_training_probe.py) on the small pipeline run's examples and Transform graph."""

import glob
import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def findings(small_run, tmp_path_factory):
    transform = os.path.join(small_run.pipeline_root, "Transform")
    [graph] = glob.glob(os.path.join(transform, "transform_graph", "*"))
    [examples] = glob.glob(os.path.join(small_run.pipeline_root, "IdxExampleGen", "examples", "*"))
    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.distributed_training_probe",
            graph,
            examples,
            str(tmp_path_factory.mktemp("probe")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in probe.stdout.splitlines() if line.startswith("FINDINGS ")]
    assert probe.returncode == 0 and lines, probe.stderr[-4000:]
    return json.loads(lines[-1][len("FINDINGS ") :])


def test_two_replicas_reduce_the_loss_over_the_global_batch(findings):
    replicated = findings["replicated"]
    assert replicated["replicas"] == 2
    assert replicated["loss_two"] == pytest.approx(replicated["loss_one"], rel=1e-5)
    # The same update: a loss averaged per replica instead of per global batch would double it.
    assert replicated["step"] > 1e-3
    assert replicated["weight_difference"] < 1e-3 * replicated["step"]


def test_mixed_precision_trains_without_nans_and_exports_float32(findings):
    mixed = findings["mixed_precision"]
    assert len(mixed["epoch_losses"]) == 2
    assert all(math.isfinite(v) for v in mixed["epoch_losses"] + mixed["val_neg_elbo"])
    assert mixed["epoch_losses"][-1] < 543  # better than predicting 1/2 for every pixel
    dtypes = dict(mixed["output_dtypes"])
    assert dtypes.pop("is_anomaly") == "bool"
    assert set(dtypes.values()) == {"float32"}
    assert mixed["outputs_finite"]

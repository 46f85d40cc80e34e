"""The parts of TFX's DSL our components are written with, imported from the modules that define them.

``from tfx import v1 as tfx`` is the templates' spelling, but importing ``tfx.v1`` imports Google
Cloud's aiplatform client (``tfx.v1.extensions.google_cloud_ai_platform``): 7.7 s on 2 cores,
paid by every Kubeflow pod and every local run before any work. These are the same objects
``tfx.v1`` re-exports (``tfx/v1/dsl/components/__init__.py``, ``tfx/v1/components/__init__.py``),
on both stacks.
"""

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component

__all__ = ["InputArtifact", "OutputArtifact", "Parameter", "component"]

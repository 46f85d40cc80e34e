"""vae-mnist's pipeline wiring, configuration, runners and command line.

Importing it first sets what must be set before TensorFlow loads: the stack's environment
(``pipeline/stack.py``: Keras 2 for ``tf.keras``, as in the pods), and a readable console:
TensorFlow's C++ start-up chatter (CUDA plugin registration on machines without a GPU) and
google-api-core's warnings about Python 3.10 (the fallback stack's) say nothing a user can act on.
The environment variables also reach Beam's worker processes. Set TF_CPP_MIN_LOG_LEVEL yourself to
see TensorFlow's C++ logs.
"""

import os
import warnings

from pipeline import stack

stack.configure_environment()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning:google.api_core._python_version_support")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")

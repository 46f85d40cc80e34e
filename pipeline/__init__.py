"""vae-mnist's pipeline wiring, configuration, runners and command line.

Importing it first keeps the console readable: TensorFlow's C++ start-up chatter (CUDA plugin
registration on machines without a GPU) and google-api-core's warnings about Python 3.10 (the
newest Python TFX 1.16 supports) say nothing a user can act on. The environment variables also
reach Beam's worker processes. Set TF_CPP_MIN_LOG_LEVEL yourself to see TensorFlow's C++ logs.
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning:google.api_core._python_version_support")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")

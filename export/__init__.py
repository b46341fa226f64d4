"""MovieLens -> two-tower model -> validated, versioned SavedModel store (``python -m export``).

tensorflow-recommenders needs Keras 2 (tf-keras): ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow
is imported anywhere, so the package sets it (without overriding an explicit choice) on import.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

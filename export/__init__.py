"""MovieLens -> two-tower model -> validated, versioned SavedModel store (``python -m export``).

Importing the package sets nothing: a process that imports TensorFlow through it calls
``export.environment.configure()`` first (tensorflow-recommenders needs ``TF_USE_LEGACY_KERAS=1``).
"""

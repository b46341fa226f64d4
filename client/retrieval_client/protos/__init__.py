"""TF Serving's protocol buffers, the subset this client uses; see ``compile.py`` and ``_pool.py``."""

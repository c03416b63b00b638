"""Reproduction pipeline for "On the Diversity of Synthetic Data and its Impact on Training LLMs".

One module (or sub-package) per stage; ``workflow_scripts.core`` holds what every stage shares:
configuration schema, artifact contract (atomic writes + manifests), hashing, logging and CLI helpers.
"""

__version__ = "0.1.0"

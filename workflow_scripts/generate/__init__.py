"""Synthetic generations: LLM backends, the paper's templates, rendering, the request cache, the stage.

Light on import: nothing here loads torch; backends are imported when a model is loaded.
"""

"""LLM backends behind :class:`workflow_scripts.llm.types.LLMBackend` (each imported lazily)."""

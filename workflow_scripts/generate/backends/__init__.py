"""LLM backends behind :class:`workflow_scripts.generate.llm.LLMBackend` (each imported lazily)."""

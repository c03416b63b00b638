"""Stage sft (``python -m workflow_scripts.sft``): supervised fine-tuning of a converted pre-trained model (transformers, plain torch loop).

Instruction data (``sft.sources``) comes from any mix of:

- ``alpaca``: records ``{instruction, input, output}`` (the paper used a GPT-4-generated Alpaca set);
- ``flan``: records ``{inputs, targets}`` (the paper used FLAN v2);
- ``generated_mcq``: the multiple-choice questions of a ``generate`` artifact (``--generations``), turned into
  question -> step-by-step explanation + answer pairs (the CPU default, since nothing can be downloaded).

``alpaca`` / ``flan`` paths are a local JSON / JSONL / Parquet file or folder of them, or a hub dataset id.
A seeded ``heldout_fraction`` of the pairs (chosen by a hash of the prompt) is kept out of training; its loss
before and after fine-tuning is recorded. Every pair is rendered with the chat template and the system
prompt, and only the response tokens carry loss (prompt labels are -100).

Output: a Hugging Face model folder (weights, tokenizer with its chat template, ``generation_config.json``),
``sft_info.json`` (system prompt, chat template, data counts, losses), ``metrics.csv`` (per optimiser step:
step, epoch, loss, lr, grad_norm, tokens; the timings are in the log) and ``heldout.jsonl`` (the held-out conversations).
"""

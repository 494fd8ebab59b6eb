"""The embedded task ``tldr-synth``: generator (``synth``), gold judge (``gold``) and tokenizer (``tokenizer``)."""

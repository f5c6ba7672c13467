"""The MiniMind model, one module per concept (stages 01–08), and provided helpers beside it
(``hf``: registration with the Hugging Face Auto classes; ``generate``: batched, KV-cached generation over its forward)."""

"""The MiniMind model, one module per concept (stages 01–08)."""

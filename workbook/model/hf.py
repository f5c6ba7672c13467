"""Register MiniMind with Hugging Face's Auto classes (provided; not an exercise).

After ``register(MiniMindConfig, MiniMindForCausalLM)``, ``AutoConfig.from_pretrained(dir)`` and
``AutoModelForCausalLM.from_pretrained(dir)`` recognise a saved ``model_type = "minimind"``
checkpoint.  The classes are arguments, not imports: the same model exists twice (your
``workbook.model`` and the reference ``_workbook_reference.model``), and the last registration
wins, so register the pair you want to load with just before loading.
"""
from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM


def register(config_cls: type, model_cls: type) -> None:
    """Map ``config_cls.model_type`` -> config_cls -> model_cls in the Auto classes.

    Idempotent (``exist_ok=True``): calling it again, or with the other namespace's classes,
    replaces the earlier mapping instead of raising.
    """
    model_type = getattr(config_cls, "model_type", "")
    if not model_type:
        raise ValueError(f"{config_cls.__name__} has no model_type; "
                         f"MiniMindConfig should set model_type = 'minimind'")
    if getattr(model_cls, "config_class", config_cls) is not config_cls:
        raise ValueError(f"{model_cls.__name__}.config_class is {model_cls.config_class!r}, "
                         f"not {config_cls!r}: register a config and model from the same package")
    AutoConfig.register(model_type, config_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)

"""MiniMindConfig: every hyper-parameter of the model in one object (stage 00).

It subclasses Hugging Face's ``PretrainedConfig``, so it saves to and loads from ``config.json``
and ``AutoConfig`` can find it by ``model_type = "minimind"``.  Lesson: notebooks/00_welcome.ipynb.
Check: ``python -m workbook check 00``.
"""
from __future__ import annotations

import math

from transformers import PretrainedConfig

# YaRN settings MiniMind uses when `inference_rope_scaling=True` (16x longer context at inference).
YARN_ROPE_SCALING = {
    "type": "yarn",
    "factor": 16,
    "original_max_position_embeddings": 2048,
    "beta_fast": 32,
    "beta_slow": 1,
    "attention_factor": 1.0,
}


def default_intermediate_size(hidden_size: int) -> int:
    """SwiGLU width: 8/3 of hidden (same parameter count as a 4x GELU MLP), rounded up to 64.

    I = 64 * ceil(int(H * 8 / 3) / 64)      (512 -> 1408, 640 -> 1728, 768 -> 2048)
    """
    # TODO(learner): one line; math.ceil is imported above.
    raise NotImplementedError(
        "TODO(00 welcome): 在 workbook/config.py 里写 default_intermediate_size，"
        "见 notebooks/00_welcome.ipynb")


class MiniMindConfig(PretrainedConfig):
    model_type = "minimind"

    def __init__(
        self,
        dropout: float = 0.0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        hidden_act: str = "silu",
        hidden_size: int = 512,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 32768,
        num_attention_heads: int = 8,
        num_hidden_layers: int = 8,
        num_key_value_heads: int = 2,
        vocab_size: int = 6400,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 1e6,
        inference_rope_scaling: bool = False,
        rope_scaling: dict | None = None,
        flash_attn: bool = True,
        use_moe: bool = False,
        num_experts_per_tok: int = 2,
        n_routed_experts: int = 4,
        n_shared_experts: int = 1,
        scoring_func: str = "softmax",
        aux_loss_alpha: float = 0.01,
        seq_aux: bool = True,
        norm_topk_prob: bool = True,
        **kwargs,
    ):
        # TODO(learner):
        #   1. validate, raising ValueError that names the field and its value:
        #      - hidden_size, num_attention_heads, num_key_value_heads, num_hidden_layers,
        #        vocab_size, max_position_embeddings: positive integers — not floats (512.0),
        #        not bools (True is an int in Python: isinstance(True, int) is True)
        #      - intermediate_size: None or a positive integer (same rule)
        #      - hidden_size divisible by num_attention_heads; head_dim even (RoPE pairs)
        #      - num_attention_heads divisible by num_key_value_heads (GQA)
        #      - 0 <= dropout < 1 (0 allowed, 1 not); scoring_func == "softmax";
        #        with use_moe: 1 <= num_experts_per_tok <= n_routed_experts
        #      (check "positive integer" first, so a 0 never reaches a `%`)
        #   2. store every argument as an attribute of the same name;
        #      intermediate_size None -> default_intermediate_size(hidden_size) (write it back)
        #   3. rope_scaling given -> keep it (it wins over inference_rope_scaling);
        #      inference_rope_scaling=True and no rope_scaling -> a fresh copy of YARN_ROPE_SCALING
        #      (dict(...): never the module's dict itself, or one config's edit changes them all)
        #   4. finally super().__init__(bos_token_id=..., eos_token_id=..., **kwargs): every other
        #      keyword (tie_word_embeddings, auto_map, ...) is kept and saved in config.json
        raise NotImplementedError(
            "TODO(00 welcome): 在 workbook/config.py 里写 MiniMindConfig.__init__，"
            "见 notebooks/00_welcome.ipynb")

    # Provided: transformers 5.x turns `rope_scaling` into its own `rope_parameters` format.
    # MiniMind's field is a plain dict (or None): keep it as such, stored in __dict__ so it is saved.
    @property
    def rope_scaling(self) -> dict | None:
        return self.__dict__.get("rope_scaling")

    @rope_scaling.setter
    def rope_scaling(self, value: dict | None) -> None:
        self.__dict__["rope_scaling"] = value

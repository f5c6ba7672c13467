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
    return 64 * math.ceil(int(hidden_size * 8 / 3) / 64)


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
        # Validate first: a bad value should fail here, with its name, not deep inside a forward.
        for name, value in (("hidden_size", hidden_size), ("num_attention_heads", num_attention_heads),
                            ("num_key_value_heads", num_key_value_heads),
                            ("num_hidden_layers", num_hidden_layers), ("vocab_size", vocab_size),
                            ("max_position_embeddings", max_position_embeddings)):
            # bool is a subclass of int (isinstance(True, int) is True): exclude it on purpose
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # head_dim = hidden / heads must be a whole number
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by "
                             f"num_attention_heads ({num_attention_heads})")
        # GQA: each kv head serves n_rep = heads / kv_heads query heads
        if num_attention_heads % num_key_value_heads:
            raise ValueError(f"num_attention_heads ({num_attention_heads}) must be divisible by "
                             f"num_key_value_heads ({num_key_value_heads})")
        # RoPE rotates pairs (i, i + head_dim/2): head_dim must be even
        if (hidden_size // num_attention_heads) % 2:
            raise ValueError(f"head_dim = hidden_size / num_attention_heads = "
                             f"{hidden_size // num_attention_heads} must be even for RoPE")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if scoring_func != "softmax":
            raise ValueError(f"scoring_func must be 'softmax', got {scoring_func!r}")
        if use_moe and not 1 <= num_experts_per_tok <= n_routed_experts:
            raise ValueError(f"num_experts_per_tok ({num_experts_per_tok}) must be between 1 and "
                             f"n_routed_experts ({n_routed_experts})")
        # None means "use the SwiGLU rule"; anything else is a width like the sizes above
        if intermediate_size is not None and (not isinstance(intermediate_size, int)
                                              or isinstance(intermediate_size, bool)
                                              or intermediate_size <= 0):
            raise ValueError(f"intermediate_size must be a positive integer or None, "
                             f"got {intermediate_size!r}")

        self.dropout = dropout
        self.hidden_act = hidden_act
        self.hidden_size = hidden_size
        # None -> the SwiGLU rule, written back so config.json records the real width
        self.intermediate_size = (default_intermediate_size(hidden_size)
                                  if intermediate_size is None else intermediate_size)
        self.max_position_embeddings = max_position_embeddings
        self.num_attention_heads = num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.num_key_value_heads = num_key_value_heads
        self.vocab_size = vocab_size
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.inference_rope_scaling = inference_rope_scaling
        # an explicit rope_scaling wins; the default is a fresh copy, never the shared module dict
        if rope_scaling is None and inference_rope_scaling:
            rope_scaling = dict(YARN_ROPE_SCALING)
        self.rope_scaling = rope_scaling
        self.flash_attn = flash_attn
        self.use_moe = use_moe
        self.num_experts_per_tok = num_experts_per_tok
        self.n_routed_experts = n_routed_experts
        self.n_shared_experts = n_shared_experts
        self.scoring_func = scoring_func
        self.aux_loss_alpha = aux_loss_alpha
        self.seq_aux = seq_aux
        self.norm_topk_prob = norm_topk_prob
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    # transformers 5.x turns `rope_scaling` into its own `rope_parameters` format.  MiniMind's
    # field is a plain dict (or None): keep it as such, stored in __dict__ so it is saved.
    @property
    def rope_scaling(self) -> dict | None:
        return self.__dict__.get("rope_scaling")

    @rope_scaling.setter
    def rope_scaling(self, value: dict | None) -> None:
        self.__dict__["rope_scaling"] = value

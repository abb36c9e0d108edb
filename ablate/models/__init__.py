"""Models: backbones (hub id, folder or built from a config), LoRA or full fine-tuning, heads, parameter counts."""

from ablate.models.backbones import (
    LORA_TARGETS,
    SPECIAL_TOKENS,
    ParamCounts,
    apply_lora,
    build_char_tokenizer,
    count_parameters,
    load_model,
    position_limit,
    prepare_backbone,
    save_scratch_backbone,
    scratch_config,
)

__all__ = [
    "LORA_TARGETS", "SPECIAL_TOKENS", "ParamCounts", "apply_lora", "build_char_tokenizer", "count_parameters",
    "load_model", "position_limit", "prepare_backbone", "save_scratch_backbone", "scratch_config",
]

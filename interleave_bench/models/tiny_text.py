"""A tiny random text-only causal LM (Llama shape) with an in-memory BPE: the model the GRPO
comparison with TRL runs on (TRL only trains text), and the text family's test model."""

from __future__ import annotations

from pathlib import Path

from .tiny_common import sentences, train_bpe

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def build_tiny_text(dest: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Save a tiny ``LlamaForCausalLM`` and its tokenizer under ``dest``; return ``dest``."""
    import torch
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(sentences([".", "!"], ["Answer in one sentence."]), [BOS, EOS, PAD], 384)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, 0)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest

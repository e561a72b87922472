"""A tiny random Emu3 checkpoint built offline, so tests exercise the real Emu3 code paths.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on sentences generated
here, extended with Emu3's special tokens and one ``<|visual token NNNNNN|>`` per VQ code; the
model comes from a small ``Emu3Config`` with random weights; everything is written with
``save_pretrained`` so ``Emu3ForConditionalGeneration`` / ``Emu3Processor`` (and ``AutoProcessor``,
``AutoModelForImageTextToText``) load it like a Hub checkpoint.

Shape: text model hidden 64, 2 layers; VQ codebook of 256 entries with four channel multipliers
(``Emu3Processor`` hard-codes a downsample ratio of 8), so a 4x4 latent grid decodes to 32x32
pixels. The image processor's pixel budget is 32x32, which the Emu3 adapter also takes as the
default size of generated images.

One deliberate tweak keeps tests meaningful: random weights almost never pick ``<|image start|>``
under greedy decoding, so the builder gives the model two "switch" features. Hidden dimension 0
of the input embedding is 1 for ordinary text tokens and dimension 1 is 1 for ``TRIGGER`` (":"),
while the LM head rows read them: the ":" row looks at dimension 0 and the ``<|image start|>`` row
at dimension 1 (``SWITCH_WEIGHT``). The residual stream carries the current token's embedding
through two small layers, so a greedy answer reads ":" then an image, then text, ":" and an image
again until the adapter's image cap bans the image start. The saved folder is an ordinary Emu3
model with edited weights.
"""

from __future__ import annotations

from pathlib import Path

from .tiny_common import sentences, train_bpe

# Emu3's own special tokens (as in the BAAI checkpoints), so the adapter sees the real layout.
PAD = "<|endoftext|>"
BOS = "<|extra_203|>"
EOS = "<|extra_204|>"
IMAGE_TOKEN = "<image>"  # input placeholder the processor expands into VQ tokens
BOI = "<|image start|>"
EOI = "<|image end|>"
IMAGE_WRAPPER = "<|image token|>"  # follows the "H*W" size header
EOL = "<|extra_200|>"  # ends every row of visual tokens
EOF = "<|extra_201|>"  # ends the frame, before the image end
EXTRA_SPECIAL = {
    "image_token": IMAGE_TOKEN,
    "boi_token": BOI,
    "eoi_token": EOI,
    "image_wrapper_token": IMAGE_WRAPPER,
    "eof_token": EOF,
    "eol_token": EOL,
}
SPECIAL_TOKENS = [PAD, BOS, EOS, *EXTRA_SPECIAL.values()]

CODEBOOK_SIZE = 256
LATENT_SIDE = 4  # 4x4 codes per generated image
IMAGE_SIDE = LATENT_SIDE * 8  # 32 pixels: four channel multipliers = three 2x upsamplings
HIDDEN = 64
TRIGGER = "."
SWITCH_WEIGHT = 1.0

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% else %}{{ m['role'] | upper }}: {% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ ' ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def visual_token(code: int) -> str:
    """Emu3's name for VQ code ``code``; the model reads the code from the last six digits."""
    return f"<|visual token {code:06d}|>"


def _corpus() -> list[str]:
    """Short sentences about pictures plus size headers such as ``4*4``, enough for a small BPE."""
    return sentences(
        [".", " in the morning.", " step by step.", ": here is the image."],
        [f"{h}*{w}" for h in range(1, 17) for w in range(1, 17)]
        + ["USER: Show me how to make tea. ASSISTANT: First boil the water: then add leaves."],
    )


def build_tokenizer():
    """A byte-level BPE trained in memory, wrapped as a fast tokenizer with Emu3's tokens.

    The special tokens get ids 0..8 in ``SPECIAL_TOKENS`` order, the visual tokens the next
    ``CODEBOOK_SIZE`` ids. No BOS is added by the tokenizer: ``Emu3Processor`` adds it itself.
    """
    from transformers import PreTrainedTokenizerFast

    visual = [visual_token(i) for i in range(CODEBOOK_SIZE)]
    tok = train_bpe(_corpus(), SPECIAL_TOKENS + visual, len(SPECIAL_TOKENS) + CODEBOOK_SIZE + 512)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        extra_special_tokens=dict(EXTRA_SPECIAL),
    )


def build_tiny_emu3(dest: Path, *, seed: int = 0) -> Path:
    """Build and save a tiny random Emu3 model + processor under ``dest``; return ``dest``.

    About 0.5M parameters, 2 MB on disk; building takes well under a second after imports.
    """
    import torch
    from transformers import (
        Emu3Config,
        Emu3ForConditionalGeneration,
        Emu3ImageProcessor,
        Emu3Processor,
    )

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    config = Emu3Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": HIDDEN,
            "intermediate_size": 2 * HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "attention_dropout": 0.0,
            "pad_token_id": ids[PAD],
            "bos_token_id": ids[BOS],
            "eos_token_id": ids[EOS],
        },
        vq_config={
            "codebook_size": CODEBOOK_SIZE,
            "embed_dim": 4,
            "latent_channels": 4,
            "base_channels": 32,  # GroupNorm uses 32 groups
            "channel_multiplier": [1, 1, 1, 1],  # downsample 8, as Emu3Processor assumes
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "hidden_size": 32,  # attention width equals the channel count
            "num_attention_heads": 1,
            "temporal_downsample_factor": 1,  # still images only: no temporal blocks
        },
        vocabulary_map=vocab,
        tie_word_embeddings=False,  # the head rows below must differ from the input embedding
    )
    with torch.random.fork_rng():  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = Emu3ForConditionalGeneration(config).eval()
    _add_switch_features(model, tokenizer)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = ids[BOS], ids[EOS], ids[PAD]
    gen._from_model_config = False
    model.save_pretrained(dest)

    side_pixels = IMAGE_SIDE * IMAGE_SIDE
    image_processor = Emu3ImageProcessor(
        min_pixels=side_pixels, max_pixels=side_pixels, spatial_factor=8
    )
    processor = Emu3Processor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(dest)
    return dest


def _add_switch_features(model, tokenizer) -> None:
    """Make ":" follow ordinary text and ``<|image start|>`` follow ":" (see the module doc)."""
    import torch

    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids) | {vocab[t] for t in SPECIAL_TOKENS}
    special |= {i for t, i in vocab.items() if t.startswith("<|visual token")}
    trigger = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(TRIGGER))
    if len(trigger) != 1:
        raise RuntimeError(f"{TRIGGER!r} is not a single token in the tiny vocabulary")
    text_ids = torch.tensor(sorted(set(vocab.values()) - special - set(trigger)))
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        embed[:, :2] = 0.0
        embed[text_ids, 0] = 1.0
        embed[trigger[0], 1] = 1.0
        head[:, :2] = 0.0
        head[trigger[0], 0] = SWITCH_WEIGHT
        head[vocab[BOI], 1] = SWITCH_WEIGHT

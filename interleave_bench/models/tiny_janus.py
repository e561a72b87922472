"""A tiny random Janus checkpoint built offline, so tests exercise the real Janus code paths.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on sentences generated
here, the model comes from a small ``JanusConfig`` with random weights, and everything is written
with ``save_pretrained`` so ``JanusForConditionalGeneration.from_pretrained`` /
``JanusProcessor.from_pretrained`` / ``AutoProcessor`` load it like a Hub checkpoint.

One deliberate tweak keeps tests meaningful: random weights almost never pick
``<begin_of_image>`` under greedy decoding, so the builder unties the LM head from the input
embeddings and scales the ``<begin_of_image>`` row of the head (``BOI_HEAD_SCALE``). Its logit then
swings widely with the hidden state, so it wins at some positions and not others and greedy
answers interleave text and images. The saved folder is still an ordinary Janus model.
"""

from __future__ import annotations

from pathlib import Path

from .tiny_common import sentences, train_bpe

# The real Janus special tokens (DeepSeek's tokenizer), so the chat format matches checkpoints.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE_TOKEN = "<image_placeholder>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IMAGE_TOKEN, BOI, EOI]

IMAGE_SIZE = 32  # pixels, both for the understanding encoder input and the generated images
PATCH_SIZE = 8  # 32 / 8 = 4 patches a side -> 16 image tokens per image
HIDDEN = 64
BOI_HEAD_SCALE = 4.0

# Our own minimal chat format in Janus's style: "<|User|>: ...\n\n<|Assistant|>:".
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|User|>: {% elif m['role'] == 'assistant' %}<|Assistant|>: "
    "{% else %}{{ m['role'] | capitalize }}: {% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if c['type'] == 'image' %}<image_placeholder>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if m['role'] == 'user' %}{{ '\\n\\n' }}{% else %}" + EOS + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def _corpus() -> list[str]:
    """A few hundred short sentences about pictures and steps, enough for a small BPE."""
    return sentences(
        [".", " in the morning.", " step by step.", " and shows the image."],
        [
            "<|User|>: Show me how to make tea.",
            "<|Assistant|>: First boil the water, then add the leaves.",
            "Here is a picture of the result.",
            "Step 1: cut the bread. Step 2: add butter. Step 3: enjoy.",
        ],
    )


def build_tokenizer():
    """A byte-level BPE trained in memory, wrapped as a fast tokenizer with Janus's tokens.

    The special tokens get ids 0..5 in ``SPECIAL_TOKENS`` order; BOS is prepended to every
    encoding (as DeepSeek's tokenizer does) and the image tokens are exposed as
    ``image_token``/``boi_token``/``eoi_token``, which ``JanusProcessor`` reads.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(_corpus(), SPECIAL_TOKENS, 512)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": BOI, "eoi_token": EOI},
    )


def build_tiny_janus(dest: Path, *, seed: int = 0) -> Path:
    """Build and save a tiny random Janus model + processor under ``dest``; return ``dest``.

    Shape: Llama text model (hidden 64, 2 layers), a 1-layer vision encoder on 32x32 inputs with
    8-pixel patches (16 image tokens), and a VQ model with a 64-entry codebook whose decoder turns
    the 4x4 code grid into 32x32 pixels (three upsamplings). About 1.3M parameters, 5 MB.
    """
    import torch
    from transformers import (
        JanusConfig,
        JanusForConditionalGeneration,
        JanusProcessor,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    num_image_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2

    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
    )
    vision_config = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=HIDDEN,
        num_image_tokens=num_image_tokens,
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 2, 2],  # three upsamplings: 4x4 codes -> 32x32 pixels
        num_res_blocks=1,
        projection_dim=HIDDEN,
        image_token_embed_dim=HIDDEN,
    )
    config = JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=ids[IMAGE_TOKEN],
        tie_word_embeddings=False,  # so the head row below can differ from the input embedding
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.lm_head.weight[ids[BOI]] *= BOI_HEAD_SCALE
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = ids[BOS], ids[EOS], ids[PAD]
    gen._from_model_config = False
    gen.guidance_scale = 5.0
    gen.generation_kwargs = {"boi_token_id": ids[BOI]}
    model.save_pretrained(dest)

    image_processor = JanusImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        num_image_tokens=num_image_tokens,
    )
    processor.save_pretrained(dest)
    return dest

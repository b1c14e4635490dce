"""Build the toy VideoLLM's tokenizer, processor and config from scratch (no hub needed).

A word-level tokenizer (`tokenizers` WordLevel, punctuation isolated) keeps offsets exact and the
vocabulary tiny; the model is a real LlavaNextVideoForConditionalGeneration: a small CLIP tower,
2×2 average pooling (4×4 tokens per 32×32 frame), and a small Llama decoder.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextImageProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.llava_next_video.video_processing_llava_next_video import (
    LlavaNextVideoVideoProcessor,
)

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<video>", "<image>"]
IMAGE_SIZE = 32
PATCH_SIZE = 4


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every word of `texts` plus the letters A–Z."""
    pre = _pre_tokenizer()
    words: set[str] = {chr(ord("A") + i) for i in range(26)}
    for text in texts:
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    words -= set(SPECIALS)
    vocab = {token: i for i, token in enumerate(SPECIALS + sorted(words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"video_token": "<video>", "image_token": "<image>"},
    )


def build_processor(
    tokenizer: PreTrainedTokenizerFast, image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE
) -> LlavaNextVideoProcessor:
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    video = LlavaNextVideoVideoProcessor(size=size, crop_size=crop)
    image = LlavaNextImageProcessor(
        size=size, crop_size=crop, image_grid_pinpoints=[[image_size, image_size]]
    )
    return LlavaNextVideoProcessor(
        video_processor=video,
        image_processor=image,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
    )


def build_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    layers: int = 8,
    hidden: int = 128,
    heads: int = 4,
    vision_hidden: int = 64,
    vision_layers: int = 2,
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
    intermediate: int | None = None,  # default 3 × hidden
    vision_heads: int = 4,
    vision_intermediate: int | None = None,  # default 2 × vision_hidden
    vision_feature_layer: int = -1,
    vocab_size: int | None = None,  # default: the tokenizer's
    max_positions: int = 1024,
) -> LlavaNextVideoConfig:
    """The toy's architecture; the keyword arguments also give full-size shapes (benchmarks)."""
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_intermediate or vision_hidden * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        vocab_size=vocab_size or len(tokenizer),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer,
        spatial_pool_stride=2,
        spatial_pool_mode="average",
        image_grid_pinpoints=[[image_size, image_size]],
        tie_word_embeddings=False,
    )

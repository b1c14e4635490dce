"""InternVL chat (OpenGVLab `InternVLChatModel`): InternViT + pixel shuffle + MLP + a causal LM.

The paper's Mini-InternVL-4B-Video-FT is one (InternViT-300M, Phi-3-mini). Its checkpoints ship
remote code; this module reimplements the architecture under the original names so the weights
load unrenamed and no remote code runs:
`vision_model.embeddings.{class_embedding,patch_embedding,position_embedding}`,
`vision_model.encoder.layers.N.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}`,
`mlp1.{0,1,3}` (LayerNorm, Linear, GELU, Linear), `language_model.*` (transformers' Phi3/Qwen2/
Llama ForCausalLM, whose parameter names are the original ones).

Per frame (448×448): ViT features of `select_layer` without CLS, (32, 32) grid → pixel shuffle
by `downsample_ratio` → (16, 16) tokens of 4× width → mlp1. `ps_version` 'v1' keeps the
original's transposed grid (rows and columns swapped), 'v2' restores it; both as the reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.activations import ACT2FN

from flowtrace.errors import FlowtraceError
from flowtrace.models.composed import ComposedConfig, ComposedVideoLM
from flowtrace.models.pllava_network import sub_config

# OpenGVLab InternVisionConfig defaults (a saved vision_config holds only what differs).
VISION_DEFAULTS: dict[str, Any] = {
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 224,
    "qkv_bias": False,
    "hidden_size": 3200,
    "num_attention_heads": 25,
    "intermediate_size": 12800,
    "qk_normalization": True,
    "num_hidden_layers": 48,
    "hidden_act": "gelu",
    "norm_type": "rms_norm",
    "layer_norm_eps": 1e-6,
}
# LLM architectures transformers implements with the original parameter names.
LLM_TYPES = {"Phi3ForCausalLM": "phi3", "Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}


class InternRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(config: Any, size: int) -> nn.Module:
    if config.norm_type == "rms_norm":
        return InternRMSNorm(size, config.layer_norm_eps)
    return nn.LayerNorm(size, eps=config.layer_norm_eps)


class InternVisionEmbeddings(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        dim, self.patch, self.image_size = config.hidden_size, config.patch_size, config.image_size
        self.class_embedding = nn.Parameter(torch.empty(1, 1, dim))
        self.patch_embedding = nn.Conv2d(config.num_channels, dim, self.patch, self.patch)
        side = self.image_size // self.patch
        self.position_embedding = nn.Parameter(torch.empty(1, side * side + 1, dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))
        batch, dim, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(batch, 1, -1)
        grid = self.position_embedding[:, 1:]
        side = self.image_size // self.patch
        if (height, width) != (side, side):
            # Other input sizes: bicubic resize of the position grid, as the original.
            grid = grid.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
            grid = grid.reshape(1, dim, -1).permute(0, 2, 1).to(patches.dtype)
        position = torch.cat([self.position_embedding[:, :1], grid], dim=1)
        return torch.cat([cls, patches], dim=1) + position


class InternAttention(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        dim = config.hidden_size
        self.heads = config.num_attention_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.q_norm = InternRMSNorm(dim, config.layer_norm_eps)
            self.k_norm = InternRMSNorm(dim, config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, dim).unbind(2)
        if self.qk_normalization:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class InternMLP(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.act = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternVisionLayer(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        dim = config.hidden_size
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = _norm(config, dim)
        self.norm2 = _norm(config, dim)
        self.ls1 = nn.Parameter(torch.empty(dim))
        self.ls2 = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class InternVisionEncoder(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            InternVisionLayer(config) for _ in range(config.num_hidden_layers)
        )


class InternVisionModel(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionEncoder(config)

    def forward(self, pixels: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Hidden states after `layer` (hidden_states[layer] of the original; -1 = last)."""
        states = [self.embeddings(pixels)]
        for block in self.encoder.layers:
            states.append(block(states[-1]))
        return states[layer]


class InternVLChatConfig(ComposedConfig):
    model_type = "flowtrace_internvl_chat"

    @classmethod
    def from_raw(cls, raw: dict[str, Any], video_token_id: int) -> InternVLChatConfig:
        llm = dict(raw.get("llm_config") or {})
        arch = (llm.get("architectures") or ["?"])[0]
        if arch not in LLM_TYPES:
            raise FlowtraceError(
                f"InternVL chat with a {arch} LLM: only {', '.join(LLM_TYPES)} are implemented "
                "without remote code (InternLM2 needs the checkpoint's own code, which flowtrace "
                "does not run)"
            )
        llm.setdefault("model_type", LLM_TYPES[arch])
        _legacy_rope(llm)
        config = cls()
        vision = {**VISION_DEFAULTS, **(raw.get("vision_config") or {})}
        config.vision_config = PretrainedConfig(**vision)
        if raw.get("force_image_size"):
            config.vision_config.image_size = int(raw["force_image_size"])
        config.text_config = sub_config(llm, LLM_TYPES[arch])
        config.select_layer = int(raw.get("select_layer", -1))
        config.downsample_ratio = float(raw.get("downsample_ratio", 0.5))
        config.ps_version = raw.get("ps_version", "v1")
        config.template = raw.get("template")
        config.video_token_id = video_token_id
        config.tie_word_embeddings = False
        return config

    @property
    def tokens_per_frame(self) -> int:
        side = self.vision_config.image_size // self.vision_config.patch_size
        return int(side * self.downsample_ratio) ** 2


def _legacy_rope(llm: dict[str, Any]) -> None:
    # Phi-3-mini-128k's config names LongRoPE "su" (renamed "longrope" in transformers).
    scaling = llm.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("type") in ("su", "yarn_su"):
        llm["rope_scaling"] = {**scaling, "type": "longrope", "rope_type": "longrope"}


class InternVLChatForVideo(ComposedVideoLM):
    config_class = InternVLChatConfig

    def __init__(
        self, config: InternVLChatConfig, attn: str = "sdpa", dtype: torch.dtype | None = None
    ):
        super().__init__(config)
        vision = config.vision_config
        self.vision_model = InternVisionModel(vision)
        wide = vision.hidden_size * int(1 / config.downsample_ratio) ** 2
        llm_hidden = config.text_config.hidden_size
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(wide),
            nn.Linear(wide, llm_hidden),
            nn.GELU(),
            nn.Linear(llm_hidden, llm_hidden),
        )
        self.language_model = AutoModelForCausalLM.from_config(
            config.text_config, attn_implementation=attn, dtype=dtype
        )
        self.post_init()

    def pixel_shuffle(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """The original's pixel shuffle, (N, W, H, C) -> (N, W·s, H·s, C/s²), v1 left transposed."""
        n, w, h, c = x.shape
        x = x.reshape(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
        x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
        if self.config.ps_version != "v1":
            x = x.permute(0, 2, 1, 3).contiguous()
        return x

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        videos = pixel_values_videos.shape[0]
        pixels = pixel_values_videos.flatten(0, 1)
        states = self.vision_model(pixels, self.config.select_layer)[:, 1:]
        side = int(round(states.shape[1] ** 0.5))
        grid = states.reshape(states.shape[0], side, side, -1)
        tokens = self.pixel_shuffle(grid, self.config.downsample_ratio)
        tokens = self.mlp1(tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]))
        return tokens.reshape(videos, -1, tokens.shape[-1])

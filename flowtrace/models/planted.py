"""A LLaVA-NeXT-Video whose information routes are fixed by attention rules: ground truth.

The rules ("the plant") are edge expressions (flowtrace.tokens.edges) with the layers where they
hold,
stored in the config as `flowtrace_plant`. They are part of the architecture, like a causal mask:
the model was trained under them and applies them in every forward, so an analysis must find
routes only where the plant leaves them open. The model needs each token's role (system, frame t,
question, option k, prompt tail, last) as an input, `token_groups`, which the adapter derives
from the TokenLayout, the same way Qwen-VL models take `mm_token_type_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import LlavaNextVideoForConditionalGeneration

from flowtrace.tokens.edges import blocked_edges
from flowtrace.tokens.layout import TokenLayout

# The shipped plant, for the toy's 8 layers and 8 frames. Each rule cuts `edges` in `layers`.
ROUTES = {
    "description": (
        "Video frames exchange information only in layers 0-3; the query (question and options) "
        "reads only the last frame, only in layers 2-5; the last token reads the query only in "
        "layers 4-7 and never reads video; no other token reads video or the query."
    ),
    "rules": [
        {"edges": "frame[<t] -> frame[t]", "layers": [4, 5, 6, 7]},
        {"edges": "frame[<7] -> query", "layers": [0, 1, 2, 3, 4, 5, 6, 7]},
        {"edges": "frame_7 -> query", "layers": [0, 1, 6, 7]},
        {"edges": "query -> last", "layers": [0, 1, 2, 3]},
        # No detours: tokens outside the named groups (the "USER:" between video and question,
        # separators) and the prompt tail may carry neither video nor the query to the last token.
        {"edges": "video -> other, prompt_tail, last", "layers": [0, 1, 2, 3, 4, 5, 6, 7]},
        {"edges": "query -> other, prompt_tail", "layers": [0, 1, 2, 3, 4, 5, 6, 7]},
    ],
}

# Role codes of `token_groups`; frame t is FRAME + t, option k is OPTION + k.
PAD, SYSTEM, FRAME, QUERY, QUESTION, OPTION, TAIL, LAST, OTHER = (
    -1,
    0,
    1,
    1000,
    1001,
    2000,
    3000,
    4000,
    5000,
)
_NAMED = {"system": SYSTEM, "prompt_tail": TAIL, "last": LAST, "question": QUESTION}


def token_groups(layout: TokenLayout) -> torch.Tensor:
    """(1, T) role code per position, the planted model's extra input."""
    codes = np.full(layout.seq_len, OTHER, dtype=np.int64)
    codes[layout["query"]] = QUERY
    for name, code in _NAMED.items():
        codes[layout[name]] = code
    for t in range(layout.num_frames):
        codes[layout[f"frame_{t}"]] = FRAME + t
    for k, letter in enumerate(layout.option_letters):
        codes[layout[f"option_{letter}"]] = OPTION + k
    return torch.from_numpy(codes)[None]


def layout_from_groups(codes: np.ndarray, video_grid: tuple[int, int, int]) -> TokenLayout:
    """The TokenLayout (enough of it to evaluate edge expressions) of one row of role codes."""

    def where(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask).astype(np.int64)

    groups = {name: where(codes == code) for name, code in _NAMED.items()}
    frames = [where(codes == FRAME + t) for t in range(video_grid[0])]
    groups |= {f"frame_{t}": f for t, f in enumerate(frames)}
    groups["video"] = np.concatenate(frames)
    options = sorted({int(c) - OPTION for c in codes if OPTION <= c < TAIL})
    letters = tuple(chr(ord("A") + k) for k in options)
    for k, letter in zip(options, letters, strict=True):
        groups[f"option_{letter}"] = where(codes == OPTION + k)
    groups["options"] = where((codes >= OPTION) & (codes < TAIL))
    groups["query"] = where((codes >= QUERY) & (codes < TAIL))
    groups["other"] = where(codes == OTHER)  # tokens of no named group, for the plant's rules
    return TokenLayout(
        seq_len=len(codes),
        groups=groups,
        video_grid=video_grid,
        option_letters=letters,
        true_letter=letters[0] if letters else "A",
    )


def plant_blocked(
    codes: np.ndarray, plant: dict, num_layers: int, video_grid: tuple[int, int, int]
) -> np.ndarray:
    """(layers, T, T) bool: the edges the plant cuts for one row of role codes."""
    layout = layout_from_groups(codes, video_grid)
    blocked = np.zeros((num_layers, len(codes), len(codes)), dtype=bool)
    for rule in plant["rules"]:
        edges = blocked_edges(rule["edges"], layout)
        for layer in rule["layers"]:
            blocked[layer] |= edges
    return blocked


class PlantedLlavaNextVideo(LlavaNextVideoForConditionalGeneration):
    """LLaVA-NeXT-Video with the config's `flowtrace_plant` applied in every decoder layer."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._layer_masks: list[torch.Tensor] | None = None
        self._cache: dict[bytes, np.ndarray] = {}
        for index, layer in enumerate(self.model.language_model.layers):
            layer.register_forward_pre_hook(self._planted_mask(index), with_kwargs=True)

    def _planted_mask(self, index: int):
        def swap(module, args, kwargs):
            # Set only during this model's own forward: layers called directly keep their mask.
            if self._layer_masks is not None:
                kwargs["attention_mask"] = self._layer_masks[index]
            return args, kwargs

        return swap

    def forward(
        self,
        *args: Any,
        token_groups: torch.Tensor | None = None,
        extra_cuts: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """`extra_cuts`: (B, layers, T, T) bool edges cut on top of the plant (training only)."""
        if token_groups is None:
            raise ValueError(
                "this planted model needs `token_groups` (each token's role) with its inputs; "
                "load it through flowtrace (flowtrace.models.load_model), which adds them"
            )
        padding = kwargs.get("attention_mask")
        self._layer_masks = self.layer_masks(token_groups, padding, extra_cuts)
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._layer_masks = None

    def layer_masks(
        self,
        token_groups: torch.Tensor,
        padding: torch.Tensor | None = None,
        extra_cuts: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Per layer, the additive (B, 1, T, T) mask: causal, padding, the plant, `extra_cuts`."""
        config = self.config
        layers = config.text_config.num_hidden_layers
        grid = tuple(config.flowtrace_plant["video_grid"])
        rows = [self._row_blocked(codes, layers, grid) for codes in token_groups.cpu().numpy()]
        blocked = torch.from_numpy(np.stack(rows)).to(token_groups.device)  # (B, layers, T, T)
        if extra_cuts is not None:
            blocked = blocked | extra_cuts.to(blocked.device)
        seq_len = token_groups.shape[1]
        allowed = torch.ones(seq_len, seq_len, dtype=torch.bool, device=blocked.device).tril()
        allowed = allowed & (token_groups != PAD)[:, None, :]  # (B, T, T): no padding keys
        if padding is not None:
            allowed = allowed & padding.bool()[:, None, :]
        masks = []
        for layer in range(layers):
            keep = allowed & ~blocked[:, layer]
            # A padding query would have no key left; let it see itself (its output is unused).
            keep |= torch.eye(seq_len, dtype=torch.bool, device=keep.device)
            mask = torch.zeros(keep.shape, dtype=self.dtype, device=keep.device)
            masks.append(mask.masked_fill_(~keep, torch.finfo(self.dtype).min)[:, None])
        return masks

    def _row_blocked(self, codes: np.ndarray, layers: int, grid: Sequence[int]) -> np.ndarray:
        valid = codes[codes != PAD]
        key = valid.tobytes()
        if key not in self._cache:
            self._cache[key] = plant_blocked(valid, self.config.flowtrace_plant, layers, grid)
        out = np.zeros((layers, len(codes), len(codes)), dtype=bool)
        n = len(valid)  # right padding: the real tokens come first
        out[:, :n, :n] = self._cache[key]
        return out

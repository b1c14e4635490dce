"""The adapter interface: what the engine needs to know about one VideoLLM family."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from flowtrace.data import Sample, SampleError
from flowtrace.errors import FlowtraceError
from flowtrace.models.prompt_template import PromptTemplate
from flowtrace.tokens.layout import TokenLayout


@dataclass(frozen=True)
class LoadOptions:
    """How an adapter loads a checkpoint.

    `pooling` is PLLaVA's T-H-W (others refuse it). `weights=False` builds the architecture of
    config.json with seeded random weights (the folder needs no weight files): benchmarks and
    dry runs of full-size shapes.
    """

    device: str
    dtype: torch.dtype
    attn: str = "sdpa"
    pooling: tuple[int, int, int] | None = None
    weights: bool = True


@dataclass
class Prepared:
    """One sample turned into model inputs plus the map of its token groups."""

    inputs: dict[str, torch.Tensor]
    layout: TokenLayout
    prompt: str


class Adapter:
    """One VideoLLM family: loading, prompt, inputs, where the decoder layers live.

    Subclasses set the class attributes and implement `load` and `prepare`. An adapter is made
    per loaded model, so `load` may set instance values (e.g. `default_frames` from `--pooling`).
    """

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]  # config.model_type values this adapter reads
    layers_path: ClassVar[str]  # attribute path of the decoder layers from the top module
    attention_name: ClassVar[str] = "self_attn"
    mlp_name: ClassVar[str] = "mlp"
    final_norm_path: ClassVar[str]  # the decoder's last norm, applied before the unembedding
    lm_head_path: ClassVar[str] = "lm_head"
    default_frames: int = 8
    template: ClassVar[PromptTemplate]
    summary: ClassVar[str] = ""  # one line for `flowtrace models`
    needs: ClassVar[str] = ""  # what a checkpoint must hold, and extra packages

    @classmethod
    def accepts(cls, config: dict[str, Any]) -> bool:
        """Whether this adapter reads a checkpoint with this raw config.json."""
        return config.get("model_type") in cls.model_types

    def load(self, source: str, options: LoadOptions) -> tuple[Any, Any]:
        """Return (model, processor) for a local folder or a Hugging Face id."""
        raise NotImplementedError

    def refuse_pooling(self, pooling: tuple[int, int, int] | None) -> None:
        """For adapters whose token grid is fixed by the model: pooling is PLLaVA's setting."""
        if pooling is not None:
            raise FlowtraceError(
                f"pooling={'-'.join(map(str, pooling))}: the {self.name} adapter has no video "
                "pooling to set (its tokens per frame are fixed by the model); drop the pooling "
                "setting and choose frames with the frames setting"
            )

    def frame_indices(self, count: int, n: int) -> np.ndarray | None:
        """Which of the `count` frames of a video (or of its bound) this model's reference code
        reads when asked for `n`; None: the dataset's own rule (flowtrace.data.sample_frames
        asks this first)."""
        return None

    def prepare(self, loaded: LoadedModel, sample: Sample, frames: np.ndarray) -> Prepared:
        raise NotImplementedError

    def video_grid(self, loaded: LoadedModel, frames: int) -> tuple[int, int, int]:
        """(T, H, W) of the video tokens for `frames` input frames."""
        raise NotImplementedError


@dataclass
class LoadedModel:
    """A loaded model with everything a run needs to label and reproduce its results."""

    adapter: Adapter
    model: Any  # transformers PreTrainedModel
    processor: Any
    nnsight: Any  # nnsight TransformersModel wrapping `model`
    model_id: str
    revision: str
    device: torch.device
    dtype: torch.dtype
    attn: str
    num_layers: int
    _letter_ids: dict[str, int] = field(default_factory=dict)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def num_heads(self) -> int:
        """Attention heads per decoder layer."""
        return self.model.config.get_text_config().num_attention_heads

    def layers(self, root: Any) -> Any:
        """The decoder-layer list under `root` (the nnsight wrapper or the torch module)."""
        return _walk(root, self.adapter.layers_path)

    def final_norm(self) -> Any:
        return _walk(self.model, self.adapter.final_norm_path)

    def lm_head(self) -> Any:
        return _walk(self.model, self.adapter.lm_head_path)

    def attention(self, root: Any, layer: int) -> Any:
        return getattr(self.layers(root)[layer], self.adapter.attention_name)

    def site(self, root: Any, layer: int, site: str) -> Any:
        """The module whose output is `site` (residual, attention, mlp) at decoder layer `layer`."""
        module = self.layers(root)[layer]
        if site == "residual":
            return module
        return getattr(
            module, self.adapter.attention_name if site == "attention" else self.adapter.mlp_name
        )

    def letter_id(self, letter: str) -> int:
        """Vocabulary id of an option letter as the answer token (the reference's `vocab[gt]`)."""
        if letter not in self._letter_ids:
            vocab = self.tokenizer.get_vocab()
            if letter not in vocab:
                raise FlowtraceError(
                    f"option letter {letter!r} is not a single token of {self.model_id}'s tokenizer"
                )
            self._letter_ids[letter] = vocab[letter]
        return self._letter_ids[letter]

    def continuation_id(self, prompt: str, answer: str) -> int:
        """The first token of `answer` as the reply that continues `prompt` (open-ended samples:
        the reference answer's first token, whose probability the knockouts measure)."""
        tokenizer = self.tokenizer
        joined = answer if prompt.endswith((" ", "\n")) or answer.startswith(" ") else " " + answer
        head = tokenizer(prompt)["input_ids"]
        full = tokenizer(prompt + joined)["input_ids"]
        if len(full) > len(head) and full[: len(head)] == head:
            return int(full[len(head)])
        # The answer's first piece merged with the prompt's end: take the answer's own first token.
        alone = tokenizer(joined, add_special_tokens=False)["input_ids"]
        if not alone:
            raise SampleError(f"the reference answer {answer!r} has no token to measure")
        return int(alone[0])

    def stop_ids(self) -> list[int]:
        """Token ids that end a greedy reply: the generation config's and the tokenizer's EOS."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    def decode(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def reply(self, ids: list[int]) -> str:
        """A generated reply's text (ids after a stop are -1), special tokens dropped."""
        return self.tokenizer.decode([i for i in ids if i >= 0], skip_special_tokens=True).strip()


def _walk(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root

"""Reads of one run: every layer's site outputs (the source of patches), and the attention mass
between token groups under any attention implementation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import nnsight
import torch

from flowtrace.engine.condition import SITES
from flowtrace.models import LoadedModel
from flowtrace.tokens.layout import TokenLayout


@dataclass(frozen=True)
class Run:
    """One run's next-token probabilities and, per site and layer, its (T, d) outputs."""

    probs: torch.Tensor  # (V,) float32
    sites: dict[str, list[torch.Tensor]]  # site -> per layer (T, d)
    layout: TokenLayout

    def at(self, site: str, layer: int, group: str) -> torch.Tensor:
        """(n, d) the site's output at `layer` over `group`'s tokens (a view where they are
        contiguous, as groups are, so thousands of patches copy nothing)."""
        positions = self.layout[group]
        tensor = self.sites[site][layer]
        first, last = int(positions[0]), int(positions[-1])
        if last - first + 1 == len(positions):
            return tensor[first : last + 1]
        return tensor[torch.as_tensor(positions, device=tensor.device)]

    @staticmethod
    def mean(runs: list[Run]) -> Run:
        """The position-wise mean of runs of one prompt layout (the same prompt over other
        videos): what a mean ablation puts in."""
        first = runs[0]
        for run in runs[1:]:
            if run.layout.seq_len != first.layout.seq_len:
                raise ValueError("a mean over runs needs runs of one prompt layout")
        sites = {
            site: [torch.stack([r.sites[site][i] for r in runs]).mean(0) for i in range(len(v))]
            for site, v in first.sites.items()
        }
        probs = torch.stack([r.probs for r in runs]).mean(0)
        return Run(probs, sites, first.layout)


@torch.inference_mode()
def capture_run(loaded: LoadedModel, inputs: dict[str, torch.Tensor], layout: TokenLayout) -> Run:
    """Every decoder layer's attention, MLP and layer output for `inputs`, in one trace."""
    model = loaded.nnsight
    # Resolved before the trace: its body holds only envoys, tensors and plain values.
    modules = [
        [loaded.site(model, layer, site) for site in SITES] for layer in range(loaded.num_layers)
    ]
    with model.trace(**inputs):
        saved = nnsight.save([])
        # nnsight runs interventions in execution order: attention, MLP, then the layer's output.
        for layer_modules in modules:
            for module in (layer_modules[1], layer_modules[2], layer_modules[0]):
                out = module.output
                saved.append((out[0] if isinstance(out, tuple) else out)[0])
        probs = model.output.logits[0, -1].float().softmax(-1).save()
    per_site: dict[str, list[torch.Tensor]] = {site: [] for site in SITES}
    order = ("attention", "mlp", "residual")
    for i, tensor in enumerate(saved):
        per_site[order[i % 3]].append(tensor)
    return Run(probs, per_site, layout)


@contextlib.contextmanager
def eager_attention(loaded: LoadedModel) -> Iterator[None]:
    """The model computes attention eagerly (its weights returned) inside the block; the
    implementation it was loaded with is restored after."""
    before = loaded.model.config._attn_implementation
    if before == "eager":
        yield
        return
    loaded.model.set_attn_implementation("eager")
    try:
        yield
    finally:
        loaded.model.set_attn_implementation(before)


@torch.inference_mode()
def group_attention_mass(
    loaded: LoadedModel,
    inputs: dict[str, torch.Tensor],
    layout: TokenLayout,
    targets: list[str],
    sources: list[str],
    layers: list[int] | None = None,
) -> torch.Tensor:
    """(layers, heads, targets, sources) float32: the attention a query of each target group
    puts on the keys of each source group, averaged over the target's queries. Under sdpa the
    read switches the model to eager attention for its one forward (sdpa returns no weights)."""
    layers = list(range(loaded.num_layers)) if layers is None else list(layers)
    device = loaded.device

    def membership(names: list[str]) -> torch.Tensor:
        out = torch.zeros(len(names), layout.seq_len, device=device)
        for i, name in enumerate(names):
            out[i, torch.as_tensor(layout[name], device=device)] = 1
        return out

    target_rows, source_rows = membership(targets), membership(sources)
    share = target_rows / target_rows.sum(-1, keepdim=True)
    model = loaded.nnsight
    attentions = [loaded.attention(model, layer) for layer in layers]
    with eager_attention(loaded), model.trace(**inputs):
        masses = nnsight.save([])
        for attention in attentions:
            weights = attention.output[1][0].float()  # (heads, T, T)
            masses.append(share @ weights @ source_rows.T)
    return torch.stack(list(masses))

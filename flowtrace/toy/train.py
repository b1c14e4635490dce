"""Seeded training of the embedded toy VideoLLM on the synthetic tasks (CPU, minutes).

Every batch holds freshly generated clips (a model this small memorises a fixed training set of a
few thousand clips long before it learns the rule); the held-out split is generated once from
another seed, written as mp4 and read back through decord, exactly as the analyses read it. The
loss is the cross-entropy of the answer letter at the last prompt token, where analyses read it.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import platform
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from transformers import (
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
)

from flowtrace.data import Sample, read_frames, read_samples, segment_indices, synth
from flowtrace.errors import FlowtraceError
from flowtrace.models.base import LoadedModel
from flowtrace.models.llava_next_video import LlavaNextVideoAdapter
from flowtrace.models.planted import (
    FRAME,
    PAD,
    ROUTES,
    PlantedLlavaNextVideo,
    plant_blocked,
)
from flowtrace.models.prompt_template import EVAL_MVBENCH
from flowtrace.toy.build import build_config, build_processor, build_tokenizer

FRAMES = 8
HELDOUT_SEED_OFFSET = 10_000
CONTROL_TASK = "Object Color"  # answered by any one frame: the single-frame control
CROSS_FRAME = "frame[<t] -> frame[t]"


@dataclass
class TrainConfig:
    seed: int = 0
    heldout_per_task: int = 16
    steps: int = 2500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    layers: int = 8
    hidden: int = 128
    eval_every: int = 100
    threads: int = 2
    # Candidates in one fixed order per task: a model this small, trained from scratch on CPU,
    # learns video -> letter in minutes, while matching shuffled option text takes far longer.
    shuffle_candidates: bool = False
    image_size: int = 32
    patch_size: int = 4
    device: str = "cpu"
    # Train under the fixed attention routes of flowtrace.models.planted.ROUTES (ground truth for
    # the analyses); the model is written to OUT/planted instead of OUT/model.
    plant: bool = False
    # Processes drawing and encoding the clips ahead of the optimizer (0: in this process). On a
    # GPU the clips, not the model, bound the speed; the batches are the same either way.
    workers: int = 0
    # Start from a trained toy checkpoint (its weights, tokenizer and processor) instead of
    # random weights. A plant's routes hold whatever the start: its masks are in every forward.
    init: str | None = None
    # Planted training: weight of a second loss, the answer letter read (final norm, LM head)
    # off the last frame's last token after the last layer where frames may exchange
    # information. The plant's masks, not the loss, fix which routes exist; this loss only
    # tells the frames early what the answer needs, which a three-hop route otherwise learns
    # slowly (frames -> last frame -> question -> last token).
    last_frame_loss: float = 0.0
    # Planted training: the share of single-frame control clips (CONTROL_TASK) trained with
    # cross-frame attention cut in every layer where the plant leaves it open. The plant lets
    # every task read across frames, and a model that does so for colour too fails the
    # control under a cross-frame knockout; these clips teach it to read colour off the last
    # frame alone, so the control measures what it claims. Multi-frame clips are never cut.
    control_cut: float = 0.0


@dataclass
class Batch:
    ids: list[torch.Tensor]
    pixels: torch.Tensor  # (N, T, C, H, W)
    targets: torch.Tensor  # (N,) answer letter ids
    tasks: list[str]
    groups: list[torch.Tensor] | None  # role codes per token, for a planted model


def train(out: Path, config: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Train from scratch; write `out`/model (weights, tokenizer, processor) and `out`/heldout."""
    if (config.last_frame_loss or config.control_cut) and not config.plant:
        raise FlowtraceError(
            "the last_frame_loss setting and the control_cut setting apply to plant=True "
            "training only"
        )
    if not 0 <= config.control_cut <= 1:
        raise FlowtraceError(f"control_cut={config.control_cut}: a share, from 0 to 1")
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    out = Path(out)
    heldout_dir, model_dir = out / "heldout", out / ("planted" if config.plant else "model")
    if heldout_dir.exists():
        shutil.rmtree(heldout_dir)
    synth.generate(
        heldout_dir,
        n_per_task=config.heldout_per_task,
        seed=config.seed + HELDOUT_SEED_OFFSET,
        shuffle=config.shuffle_candidates,
    )
    heldout_samples = read_samples(heldout_dir)
    started_from = None  # the record of the run this one starts from, and so on back
    if config.init:
        init = Path(config.init)
        if (init / "training.json").is_file():
            started_from = json.loads((init / "training.json").read_text())
        processor = LlavaNextVideoProcessor.from_pretrained(init)
        tokenizer = processor.tokenizer
        model_config = LlavaNextVideoConfig.from_pretrained(init)
    else:
        # The vocabulary: every word the generator can emit, from a generous draw of each task.
        drawn = [_sample(task, config.seed, i, config) for task in synth.TASKS for i in range(200)]
        tokenizer = build_tokenizer([EVAL_MVBENCH.render(s, "<video>").text for s, _ in drawn])
        processor = build_processor(tokenizer, config.image_size, config.patch_size)
        model_config = build_config(
            tokenizer,
            layers=config.layers,
            hidden=config.hidden,
            image_size=config.image_size,
            patch_size=config.patch_size,
        )
    model_config._attn_implementation = "sdpa"
    model_class = LlavaNextVideoForConditionalGeneration
    if config.plant:
        side = config.image_size // config.patch_size // model_config.spatial_pool_stride
        model_config.flowtrace_plant = {**ROUTES, "video_grid": [FRAMES, side, side]}
        model_class = PlantedLlavaNextVideo
    model = model_class(model_config)
    if config.init:
        # Through the base class, whose checkpoint key conversion a subclass does not inherit.
        start = LlavaNextVideoForConditionalGeneration.from_pretrained(config.init)
        model.load_state_dict(start.state_dict())
    model = model.to(config.device)
    heldout = _encode(
        [(s, read_frames(s.video, FRAMES, bound=s.bound)) for s in heldout_samples],
        processor,
        model,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def schedule(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    relay_layer = _frames_close(model_config) if config.plant and config.last_frame_loss else None
    cut_rng = np.random.default_rng([config.seed, 7])  # which control clips train cut
    history = []
    log(f"training {config.steps} steps of {config.batch_size} fresh clips …")
    batches = _training_batches(config, processor, model_config)
    for step, batch in enumerate(batches):
        model.train()
        rows = torch.arange(len(batch.ids))
        cuts = None
        if config.plant and config.control_cut:
            chosen = [
                t == CONTROL_TASK and cut_rng.random() < config.control_cut for t in batch.tasks
            ]
            cuts = _control_cuts(batch, chosen, model_config)
        logits, relay = _last_logits(
            model, batch, rows, tokenizer.pad_token_id, relay_layer, extra_cuts=cuts
        )
        targets = batch.targets.to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        if relay is not None:
            loss = loss + config.last_frame_loss * torch.nn.functional.cross_entropy(relay, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss_value = float(loss.detach())
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            acc = _accuracy(model, heldout, tokenizer.pad_token_id)
            elapsed = time.perf_counter() - started
            history.append({"step": step + 1, "loss": loss_value, "heldout_accuracy": acc["all"]})
            per_task = ", ".join(f"{k} {v:.0f}" for k, v in acc.items())
            line = f"step {step + 1}: loss {loss_value:.3f}, held-out % {per_task}"
            log(f"{line}, {elapsed:.0f}s")
    final = _accuracy(model, heldout, tokenizer.pad_token_id)
    chance = _chance(heldout_samples)
    seconds = time.perf_counter() - started
    model.eval().to("cpu")
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    flags = " --plant" if config.plant else ""
    flags += f" --init {config.init}" if config.init else ""
    flags += f" --last-frame-loss {config.last_frame_loss:g}" if config.last_frame_loss else ""
    flags += f" --control-cut {config.control_cut:g}" if config.control_cut else ""
    flags += f" --lr {config.lr:g}" if config.lr != TrainConfig.lr else ""
    flags += f" --steps {config.steps}" if config.steps != TrainConfig.steps else ""
    flags += (
        f" --batch-size {config.batch_size}" if config.batch_size != TrainConfig.batch_size else ""
    )
    info = {
        "command": f"flowtrace toy train --seed {config.seed} --device {config.device}{flags}",
        "config": asdict(config),
        "seconds": round(seconds, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "heldout_accuracy": final,
        "heldout_chance": chance,
        "history": history,
    }
    if started_from is not None:
        info["started_from"] = started_from
    (model_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"held-out accuracy {final['all']:.1f}% (chance {chance['all']:.1f}%) in {seconds:.0f}s")
    return info


def _training_batches(config: TrainConfig, processor, model_config) -> Iterator[Batch]:
    """Each step's batch of fresh clips, in order; made by `config.workers` processes ahead."""
    state = (config, processor, model_config)
    if config.workers <= 0:
        _init_worker(*state, threads=config.threads)
        yield from map(_step_batch, range(config.steps))
        return
    # spawn: the parent may hold CUDA, which a forked child must not inherit.
    context = multiprocessing.get_context("spawn")
    with context.Pool(config.workers, initializer=_init_worker, initargs=state) as pool:
        yield from pool.imap(_step_batch, range(config.steps), chunksize=2)


_WORKER: dict = {}


def _init_worker(config: TrainConfig, processor, model_config, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(config=config, processor=processor, model=SimpleNamespace(config=model_config))


def _step_batch(step: int) -> Batch:
    """Step `step`'s clips: task j of the step is task (first + j) mod 4, clip index first + j."""
    config = _WORKER["config"]
    tasks = list(synth.TASKS)
    first = step * config.batch_size
    drawn = [
        _sample(tasks[(first + j) % len(tasks)], config.seed, first + j, config)
        for j in range(config.batch_size)
    ]
    return _encode(drawn, _WORKER["processor"], _WORKER["model"])


def _sample(task: str, seed: int, index: int, config: TrainConfig) -> tuple[Sample, np.ndarray]:
    """A fresh training clip as (Sample, the 8 frames a model reads), without an mp4 round trip."""
    clip = synth.make_clip(task, seed, index, shuffle=config.shuffle_candidates)
    frames = clip.frames[segment_indices(len(clip.frames) - 1, FRAMES)]
    sample = Sample(
        id=f"train/{task}/{index}",
        task=task,
        video=Path(),
        question=clip.question,
        candidates=tuple(clip.candidates),
        answer=clip.answer,
    )
    return sample, frames


def _encode(samples: list[tuple[Sample, np.ndarray]], processor, model) -> Batch:
    """Inputs as analyses build them: the adapter's prepare (and its role codes when planted)."""
    loaded = LoadedModel(
        adapter=LlavaNextVideoAdapter(),
        model=model,
        processor=processor,
        nnsight=None,
        model_id="training",
        revision="",
        device=torch.device("cpu"),
        dtype=torch.float32,
        attn="sdpa",
        num_layers=model.config.text_config.num_hidden_layers,
    )
    ids, pixels, targets, groups = [], [], [], []
    vocab = processor.tokenizer.get_vocab()
    for sample, frames in samples:
        inputs = loaded.adapter.prepare(loaded, sample, frames).inputs
        ids.append(inputs["input_ids"][0])
        pixels.append(inputs["pixel_values_videos"][0])
        if "token_groups" in inputs:
            groups.append(inputs["token_groups"][0])
        targets.append(vocab[sample.answer_letter])
    tasks = [s.task for s, _ in samples]
    return Batch(ids, torch.stack(pixels), torch.tensor(targets), tasks, groups or None)


def _frames_close(model_config) -> int:
    """The last layer in which the plant lets frames read earlier frames."""
    return max(_frames_open(model_config))


def _frames_open(model_config) -> list[int]:
    """The layers in which the plant lets frames read earlier frames."""
    layers = model_config.text_config.num_hidden_layers
    closed = {
        layer
        for rule in model_config.flowtrace_plant["rules"]
        if rule["edges"] == CROSS_FRAME
        for layer in rule["layers"]
    }
    return [layer for layer in range(layers) if layer not in closed]


def _control_cuts(batch: Batch, chosen: list[bool], model_config) -> torch.Tensor | None:
    """(N, layers, T, T) bool, T the longest row: cross-frame edges cut in the layers where the
    plant leaves them open, for the chosen rows; None when no row is chosen."""
    if not any(chosen):
        return None
    layers = model_config.text_config.num_hidden_layers
    grid = tuple(model_config.flowtrace_plant["video_grid"])
    # The cut as a plant of one rule, so the plant's own edge builder makes it.
    control = {"rules": [{"edges": CROSS_FRAME, "layers": _frames_open(model_config)}]}
    width = max(len(ids) for ids in batch.ids)
    cuts = torch.zeros(len(batch.ids), layers, width, width, dtype=torch.bool)
    for row, pick in enumerate(chosen):
        if pick:
            codes = batch.groups[row].numpy()
            n = len(codes)  # right padding: the real tokens come first
            cuts[row, :, :n, :n] = torch.from_numpy(plant_blocked(codes, control, layers, grid))
    return cuts


def _last_logits(
    model,
    data: Batch,
    rows: torch.Tensor,
    pad_id: int,
    relay_layer: int | None = None,
    extra_cuts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits at each row's last token; with `relay_layer`, also the logits read off the last
    frame's last token after that layer (the planted training's second loss). `extra_cuts`
    (rows of the whole batch, as `_control_cuts` makes them) are cut on top of the plant."""
    seqs = [data.ids[i] for i in rows.tolist()]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s  # right padding keeps every real token's causal context intact
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    device = model.device
    extra = {}
    if data.groups is not None:
        groups = torch.full(ids.shape, PAD, dtype=torch.long)
        for r, i in enumerate(rows.tolist()):
            groups[r, : len(data.groups[i])] = data.groups[i]
        extra["token_groups"] = groups.to(device)
        if extra_cuts is not None:
            width = ids.shape[1]
            extra["extra_cuts"] = extra_cuts[rows][:, :, :width, :width].to(device)
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        pixel_values_videos=data.pixels[rows].to(device),
        output_hidden_states=relay_layer is not None,
        **extra,
    )
    last = out.logits[torch.arange(len(seqs)), lengths - 1].float().cpu()
    if relay_layer is None:
        return last, None
    frames = int(model.config.flowtrace_plant["video_grid"][0])
    # The first position where the running count of last-frame tokens peaks: its last token.
    last_frame = (extra["token_groups"] == FRAME + frames - 1).int().cumsum(-1).argmax(-1)
    hidden = out.hidden_states[relay_layer + 1][torch.arange(len(seqs)), last_frame]
    language = model.model.language_model
    relay = model.lm_head(language.norm(hidden))
    return last, relay.float().cpu()


@torch.no_grad()
def _accuracy(model, data: Batch, pad_id: int) -> dict[str, float]:
    model.eval()
    hits: dict[str, list[bool]] = {}
    for start in range(0, len(data.ids), 64):
        rows = torch.arange(start, min(start + 64, len(data.ids)))
        pred = _last_logits(model, data, rows, pad_id)[0].argmax(-1)
        for r, p in zip(rows.tolist(), pred.tolist(), strict=True):
            hits.setdefault(data.tasks[r], []).append(p == int(data.targets[r]))
    result = {task: 100 * float(np.mean(v)) for task, v in sorted(hits.items())}
    result["all"] = 100 * float(np.mean([h for v in hits.values() for h in v]))
    return result


def _chance(samples: list[Sample]) -> dict[str, float]:
    per_task: dict[str, list[float]] = {}
    for s in samples:
        per_task.setdefault(s.task, []).append(1 / len(s.candidates))
    result = {task: 100 * float(np.mean(v)) for task, v in sorted(per_task.items())}
    result["all"] = 100 * float(np.mean([x for v in per_task.values() for x in v]))
    return result

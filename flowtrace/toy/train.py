"""Seeded training of the embedded toy VideoLLM on the synthetic tasks (CPU, minutes).

The loss is the cross-entropy of the answer letter at the last prompt token, exactly where the
analyses read the answer ("… Best option:(" → "A").
"""

from __future__ import annotations

import json
import math
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import LlavaNextVideoForConditionalGeneration

from flowtrace.data import read_frames, read_samples, synth
from flowtrace.models.prompts import EVAL_MVBENCH
from flowtrace.toy.build import build_config, build_processor, build_tokenizer

FRAMES = 8


@dataclass
class TrainConfig:
    seed: int = 0
    train_per_task: int = 600
    heldout_per_task: int = 16
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    layers: int = 8
    hidden: int = 128
    eval_every: int = 100
    threads: int = 2
    # Candidates in one fixed order per task: a model this small, trained from scratch on CPU,
    # learns video -> letter in minutes, while matching shuffled option text takes far longer.
    shuffle_candidates: bool = False


@dataclass
class Encoded:
    ids: list[torch.Tensor]
    pixels: torch.Tensor  # (N, T, C, H, W)
    targets: torch.Tensor  # (N,) answer letter ids
    tasks: list[str]


def train(out: Path, config: TrainConfig, log: Callable[[str], None] = print) -> dict:
    """Generate data, train, evaluate on the held-out split, and write `out`/model + heldout."""
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    out = Path(out)
    heldout_dir = out / "heldout"
    model_dir = out / "model"
    with tempfile.TemporaryDirectory(prefix="flowtrace-toy-") as tmp:
        train_dir = Path(tmp) / "train"
        log(f"generating {config.train_per_task} training samples per task …")
        synth.generate(
            train_dir,
            n_per_task=config.train_per_task,
            seed=config.seed,
            shuffle=config.shuffle_candidates,
        )
        if heldout_dir.exists():
            shutil.rmtree(heldout_dir)
        # A different seed gives held-out videos the training set never saw.
        synth.generate(
            heldout_dir,
            n_per_task=config.heldout_per_task,
            seed=config.seed + 10_000,
            shuffle=config.shuffle_candidates,
        )
        train_samples = read_samples(train_dir)
        heldout_samples = read_samples(heldout_dir)
        prompts = [EVAL_MVBENCH.render(s, "<video>").text for s in train_samples]
        tokenizer = build_tokenizer(prompts)
        processor = build_processor(tokenizer)
        log(f"encoding {len(train_samples)} train / {len(heldout_samples)} held-out samples …")
        train_set = _encode(train_samples, processor)
        heldout_set = _encode(heldout_samples, processor)
    model_config = build_config(tokenizer, layers=config.layers, hidden=config.hidden)
    model_config._attn_implementation = "sdpa"
    model = LlavaNextVideoForConditionalGeneration(model_config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def schedule(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(train_set.ids)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    history = []
    for step in range(config.steps):
        if cursor + config.batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        batch = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        model.train()
        logits = _last_logits(model, train_set, batch, tokenizer.pad_token_id)
        loss = torch.nn.functional.cross_entropy(logits, train_set.targets[batch])
        loss_value = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            acc = _accuracy(model, heldout_set, tokenizer.pad_token_id)
            elapsed = time.perf_counter() - started
            history.append({"step": step + 1, "loss": loss_value, "heldout_accuracy": acc["all"]})
            line = f"step {step + 1}: loss {loss_value:.3f}, held-out {acc['all']:.1f}%"
            log(f"{line}, {elapsed:.0f}s")
    final = _accuracy(model, heldout_set, tokenizer.pad_token_id)
    chance = _chance(heldout_samples)
    seconds = time.perf_counter() - started
    model.eval()
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    info = {
        "command": f"flowtrace toy train --seed {config.seed}",
        "config": asdict(config),
        "seconds": round(seconds, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "heldout_accuracy": final,
        "heldout_chance": chance,
        "history": history,
    }
    (model_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"held-out accuracy {final['all']:.1f}% (chance {chance['all']:.1f}%) in {seconds:.0f}s")
    return info


def _encode(samples: list, processor) -> Encoded:
    ids, pixels, targets = [], [], []
    vocab = processor.tokenizer.get_vocab()
    for sample in samples:
        frames = read_frames(sample.video, FRAMES, bound=sample.bound)
        prompt = EVAL_MVBENCH.render(sample, processor.video_token).text
        enc = processor(text=prompt, videos=[frames], return_tensors="pt")
        ids.append(enc["input_ids"][0])
        pixels.append(enc["pixel_values_videos"][0])
        targets.append(vocab[sample.option_letters()[sample.answer_index()]])
    return Encoded(ids, torch.stack(pixels), torch.tensor(targets), [s.task for s in samples])


def _last_logits(model, data: Encoded, rows: torch.Tensor, pad_id: int) -> torch.Tensor:
    seqs = [data.ids[i] for i in rows.tolist()]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s  # right padding keeps every real token's causal context intact
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    out = model(input_ids=ids, attention_mask=mask, pixel_values_videos=data.pixels[rows])
    return out.logits[torch.arange(len(seqs)), lengths - 1]


@torch.no_grad()
def _accuracy(model, data: Encoded, pad_id: int) -> dict[str, float]:
    model.eval()
    hits: dict[str, list[bool]] = {}
    for start in range(0, len(data.ids), 64):
        rows = torch.arange(start, min(start + 64, len(data.ids)))
        pred = _last_logits(model, data, rows, pad_id).argmax(-1)
        for r, p in zip(rows.tolist(), pred.tolist(), strict=True):
            hits.setdefault(data.tasks[r], []).append(p == int(data.targets[r]))
    result = {task: 100 * float(np.mean(v)) for task, v in sorted(hits.items())}
    result["all"] = 100 * float(np.mean([h for v in hits.values() for h in v]))
    return result


def _chance(samples: list) -> dict[str, float]:
    per_task: dict[str, list[float]] = {}
    for s in samples:
        per_task.setdefault(s.task, []).append(1 / len(s.candidates))
    result = {task: 100 * float(np.mean(v)) for task, v in sorted(per_task.items())}
    result["all"] = 100 * float(np.mean([x for v in per_task.values() for x in v]))
    return result

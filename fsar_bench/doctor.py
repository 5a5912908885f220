"""`fsar-bench doctor`: what a (GPU) machine does with fsar-bench training, measured in a minute or two.

- the device (CUDA name, bf16 support, cuDNN) and the precision ``auto`` resolves to;
- the training-episode loader: episodes/s with 0..W workers, building the method's own training clips (its
  recipe's frame sampler and augmentation; from the frame store when one is prepared);
- one training step of a method (forward + backward + optimizer) with its episodes from the loader and
  without (the same episode resident on the device), at each precision: the gap is the data wait;
- bf16 against fp32 logits on the parity fixtures (max |difference|, argmax agreement).

Written and tested on CPU (tests/test_doctor.py); its figures matter on a GPU machine.

Usage::

    fsar-bench doctor --dataset synthetic --method otam --episodes 8
    checks = run_doctor(config, DoctorOptions(dataset="ucf101", method="molo"))   # list of (name, value) rows
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fsar_bench.api import HeadConfig, TrainEpisode
from fsar_bench.config import Config
from fsar_bench.data.episode_loader import ClipMaker, EpisodePlan, episode_batches
from fsar_bench.data.transforms import TrainClipMaker
from fsar_bench.precision import resolve_precision
from fsar_bench.train import prepare_clips


@dataclass(frozen=True)
class DoctorOptions:
    dataset: str = "synthetic"
    method: str = "otam"
    episodes: int = 8
    workers: tuple[int, ...] = (0, 1, 2)
    shot: int = 1
    queries: int = 6
    parity_dir: Path | None = None


def device_rows(device: torch.device) -> list[tuple[str, str]]:
    rows = [("torch", torch.__version__), ("device", str(device)), ("precision auto", resolve_precision("auto", device).name)]
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        rows += [("gpu", f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB"),
                 ("bf16 supported", str(torch.cuda.is_bf16_supported())), ("cudnn", str(torch.backends.cudnn.version()))]
    return rows


def loader_rows(plan: EpisodePlan, video_path, maker: ClipMaker, episodes: int, workers: tuple[int, ...]) -> list[tuple[str, str]]:
    rows = []
    for count in workers:
        loader = episode_batches(plan, video_path, maker, range(episodes + count), workers=count, prefetch=2)
        for _ in range(count):
            next(loader)
        start = time.perf_counter()
        done = sum(1 for _ in loader)
        rows.append((f"loader {count} workers", f"{done / (time.perf_counter() - start):.2f} episodes/s"))
    return rows


def step_rows(model, plan: EpisodePlan, video_path, maker: ClipMaker, episodes: int, workers: int,
              device: torch.device) -> list[tuple[str, str]]:
    """Seconds per training step with the loader and with one resident episode, per precision."""
    rows = []
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    n_support = plan.way * plan.shot
    labels = torch.arange(plan.way, device=device).repeat_interleave(plan.queries)
    for name in precisions:
        precision = resolve_precision(name, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
        scaler = precision.grad_scaler(device)

        def step(clips, classes: list[int]) -> None:
            pixels = prepare_clips(model, clips)
            episode = TrainEpisode(way=plan.way, shot=plan.shot, query_labels=labels,
                                   class_base_ids=torch.tensor(classes, device=device))
            with precision.autocast(device):
                output = model.head.loss(model.features(pixels[:n_support]), model.features(pixels[n_support:]), episode)
            scaler.scale(output.total).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

        def synchronize() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        loader = episode_batches(plan, video_path, maker, range(episodes + 1), workers=workers,
                                 pin_memory=device.type == "cuda")
        first = next(loader)
        resident = to_device(first.clips, device)
        step(resident, first.classes)  # warm-up (cudnn.benchmark picks its kernels)
        synchronize()
        start, waited = time.perf_counter(), 0.0
        for loaded in loader:
            waited += loaded.wait_seconds
            step(to_device(loaded.clips, device), loaded.classes)
        synchronize()
        with_data = (time.perf_counter() - start) / episodes
        start = time.perf_counter()
        for _ in range(episodes):
            step(resident, first.classes)
        synchronize()
        without = (time.perf_counter() - start) / episodes
        rows.append((f"step {name}", f"{with_data * 1e3:.1f} ms with data, {without * 1e3:.1f} ms without "
                                     f"(data wait {100 * waited / max(1e-9, with_data * episodes):.0f}%)"))
    return rows


def to_device(clips, device: torch.device):
    """A stacked clip tensor, or a list of clips of different sizes, on ``device`` (non-blocking from pinned)."""
    if isinstance(clips, torch.Tensor):
        return clips.to(device, non_blocking=True)
    return [clip.to(device, non_blocking=True) for clip in clips]


def parity_rows(methods_dir: Path, parity_dir: Path, device: torch.device) -> list[tuple[str, str]]:
    """bf16 autocast against fp32 logits of each parity fixture's head (``n/a`` with the reason where the
    fixture's head cannot be built generically)."""
    from fsar_bench.model.registry import discover_methods

    registry = discover_methods(methods_dir)
    rows = []
    first_of: dict[str, Path] = {}
    for path in sorted(parity_dir.glob("*.pt")):  # one fixture per registered method
        first_of.setdefault(path.stem.split("_")[0], path)
    for method, path in first_of.items():
        if method not in registry.names():
            continue
        try:
            fixture = torch.load(path, weights_only=True)
            meta, inputs = fixture["meta"], fixture["inputs"]
            card = registry.get(method).card
            head = card.head(HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=64, options=dict(card.options)))
            head.load_reference_state_dict(fixture["state_dict"])
            head = head.to(device).eval()
            order = torch.sort(inputs["support_labels"].long(), stable=True).indices
            support_features = inputs["support_features"][order].to(device)
            query_features = inputs["query_features"].to(device)
            way, shot = meta["way"], meta["shot"]

            def logits(precision: str) -> torch.Tensor:
                with torch.no_grad(), resolve_precision(precision, device).autocast(device):
                    support = head.encode(support_features)
                    query = head.encode(query_features)
                    support = {k: v.reshape(1, way, shot, *v.shape[1:]) for k, v in support.items()} \
                        if isinstance(support, dict) else support.reshape(1, way, shot, *support.shape[1:])
                    query = {k: v.unsqueeze(0) for k, v in query.items()} if isinstance(query, dict) else query.unsqueeze(0)
                    return head.logits(support, query).float()

            exact, half = logits("fp32"), logits("bf16")
            agree = float((exact.argmax(-1) == half.argmax(-1)).float().mean())
            rows.append((f"bf16 vs fp32 {path.stem}", f"max |diff| {float((exact - half).abs().max()):.2e}, "
                                                      f"argmax agreement {100 * agree:.0f}%"))
        except Exception as error:  # one fixture's head that needs more than the generic call: said, not fatal
            rows.append((f"bf16 vs fp32 {path.stem}", f"n/a ({type(error).__name__}: {str(error).splitlines()[0][:60]})"))
    return rows


def run_doctor(config: Config, options: DoctorOptions, device: torch.device) -> list[tuple[str, str]]:
    """Every check, as (name, value) rows."""
    from fsar_bench.data.benchmarks import open_benchmark
    from fsar_bench.model.registry import discover_methods
    from fsar_bench.runner import build_model, method_recipe

    benchmark = open_benchmark(options.dataset, config)
    entry = discover_methods(config.path("methods")).get(options.method)
    model = build_model(config, entry, benchmark, device, options.shot)
    model.train()
    recipe = method_recipe(config, entry, benchmark.name)
    maker = TrainClipMaker.from_recipe(recipe, model.preprocess, config.protocol["frames"], benchmark.size)
    plan = EpisodePlan.from_partition(benchmark.partition("train"), config.run["train_seed"], config.protocol["way"],
                                      options.shot, options.queries)
    rows = device_rows(device)
    rows.append(("frames from", benchmark.frames_from or ("frame store (lossless)" if benchmark.frame_store else "videos")))
    rows += loader_rows(plan, benchmark.video_path, maker, options.episodes, options.workers)
    rows += step_rows(model, plan, benchmark.video_path, maker, options.episodes, max(options.workers), device)
    parity = options.parity_dir or Path(__file__).resolve().parents[1] / "tests" / "data" / "parity"
    if parity.is_dir():
        rows += parity_rows(config.path("methods"), parity, device)
    else:
        rows.append(("bf16 vs fp32 parity", f"n/a (no parity fixtures in {parity})"))
    return rows

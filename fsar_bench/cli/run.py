"""`fsar-bench run`, `train` and `evaluate`.

Usage::

    fsar-bench run otam --dataset synthetic --shots 1,5            # trains where no checkpoint exists
    fsar-bench run tsn -d synthetic --shots 5 --episodes 200        # a labelled smoke run
    fsar-bench train otam --dataset synthetic --shot 5
    fsar-bench evaluate otam -d synthetic --shots 5 --checkpoint results/checkpoints/.../best.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fsar_bench.cli.common import config_from, handle_errors, parse_shots, stderr, stdout
from fsar_bench.errors import UsageError

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Benchmark name (see `fsar-bench datasets`).")]
EpisodesOpt = Annotated[Optional[int], typer.Option(help="Episodes per shot (default: bench.toml, 10,000). Fewer = smoke run.")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Episode seed (default: bench.toml).")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")]
BackboneOpt = Annotated[Optional[str], typer.Option(help="Backbone plugin: resnet50, clip-rn50, clip-vit-b16, dinov2-vit-b14, small-cnn (default: by dataset; see `fsar-bench backbones`).")]
WeightsOpt = Annotated[Optional[str], typer.Option("--backbone-weights", help="pretrained (the backbone's pinned weights) | a weight tag (imagenet, openai, lvd142m) | none (random) | PATH.")]
TrackOpt = Annotated[Optional[str], typer.Option(help="finetune (default: backbone trained with the head) | frozen "
                                                "(features stored once per video, heads trained on them).")]
TrainSeedOpt = Annotated[Optional[int], typer.Option(help="Training seed (default: bench.toml).")]
ResultsOpt = Annotated[Optional[Path], typer.Option(help="Results folder (default: bench.toml [paths] results).")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Video decoding worker processes.")]
SplitsDirOpt = Annotated[Optional[Path], typer.Option("--splits-dir", help="Folder holding the split files (default: bench.toml).")]
AllowMissingOpt = Annotated[bool, typer.Option("--allow-missing", help="Run without missing videos: a separate, labelled protocol.")]
TrustSplitsOpt = Annotated[bool, typer.Option("--trust-splits", help="Accept split files whose sha256 differs from the manifest.")]
AcceptCodeOpt = Annotated[bool, typer.Option(
    "--accept-code-change",
    help="Reuse a checkpoint or run made by code that changed since, declaring the change harmless (stamped).")]
PrecisionOpt = Annotated[Optional[str], typer.Option(help="auto | fp32 | bf16 | fp16 (auto: bf16 on GPUs that have it, fp16 on "
                                                          "other GPUs, fp32 on CPU). Stamped into checkpoints and runs.")]


def _data_options(splits_dir: Optional[Path], allow_missing: bool, trust_splits: bool):
    from fsar_bench.data.benchmarks import DataOptions

    return DataOptions(splits_dir=splits_dir, allow_missing=allow_missing, trust_splits=trust_splits)


def _cli_values(episodes=None, seed=None, device=None, backbone=None, backbone_weights=None, train_seed=None,
                results=None, workers=None, precision=None, track=None) -> dict[str, Any]:
    return {"protocol.episodes": episodes, "protocol.seed": seed, "run.device": device, "run.backbone": backbone,
            "run.track": track,
            "run.backbone_weights": backbone_weights, "run.train_seed": train_seed,
            "paths.results": str(results.resolve()) if results else None, "run.workers": workers,
            "run.precision": precision}


def _evaluate(ctx: typer.Context, method: str, dataset: str, shots: str, cli: dict[str, Any], checkpoint: Optional[Path],
              no_train: bool, retrain: bool, data=None, accept_code_change: bool = False) -> None:
    from fsar_bench.distributed import is_main_process
    from fsar_bench.report import collect_runs, format_table
    from fsar_bench.runner import RunRequest, run_method

    if episodes_value := cli.get("protocol.episodes"):
        if episodes_value < 1:
            raise UsageError(f"--episodes must be at least 1, got {episodes_value}")
    shot_list = parse_shots(shots)
    if checkpoint is not None and len(shot_list) > 1:
        raise UsageError("--checkpoint holds one trained model: give a single --shots value with it")
    if checkpoint is not None and no_train:
        raise UsageError("--checkpoint and --no-train exclude each other")
    if no_train and retrain:
        raise UsageError("--no-train and --retrain exclude each other: give one of them")
    config = config_from(ctx, cli)
    standard = config_from(ctx, {**cli, "protocol.episodes": None}).protocol["episodes"]
    main_process = is_main_process()
    run_ids = []
    for shot in shot_list:
        request = RunRequest(method, dataset, shot, checkpoint, no_train, retrain, data or _data_options(None, False, False),
                             accept_code_change)
        summary = run_method(config, request, standard,
                             log=lambda message: stderr.print(message))
        if main_process:  # the result, then its fingerprints: short lines that do not wrap at 80 columns
            stderr.print(f"{method} {dataset} {shot}-shot: {summary['accuracy']:.2f} ± {summary['ci95']:.2f} "
                         f"over {summary['episodes']:,} episodes", markup=False)
            stderr.print(f"  protocol {summary['protocol_fingerprint'][:8]}, episodes {summary['episode_fingerprint'][:12]}",
                         markup=False)
        run_ids.append(summary["run_id"])
    if main_process:  # under torchrun, rank 0 alone reports (every rank holds the same summary)
        table = collect_runs(config.path("results"), config.protocol)
        stdout.print(format_table(table[table["run"].isin(run_ids)], "table"))
        for run_id in run_ids:  # the last lines: where the results went (soft-wrapped: a path stays one line)
            stderr.print(f"results: {config.path('results') / 'runs' / run_id}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("run")
    @handle_errors
    def run_command(
        ctx: typer.Context,
        method: Annotated[str, typer.Argument(help="Method name (see `fsar-bench methods`).")],
        dataset: DatasetOpt,
        shots: Annotated[str, typer.Option(help="Comma-separated shots, e.g. 1,5.")] = "1,5",
        episodes: EpisodesOpt = None,
        seed: SeedOpt = None,
        checkpoint: Annotated[Optional[Path], typer.Option(help="Evaluate this checkpoint (one shot).")] = None,
        no_train: Annotated[bool, typer.Option("--no-train", help="Never train: use the checkpoint if present, else the untrained model.")] = False,
        retrain: Annotated[bool, typer.Option("--retrain", help="Train again even if a checkpoint exists.")] = False,
        device: DeviceOpt = None,
        backbone: BackboneOpt = None,
        backbone_weights: WeightsOpt = None,
        track: TrackOpt = None,
        train_seed: TrainSeedOpt = None,
        results: ResultsOpt = None,
        workers: WorkersOpt = None,
        splits_dir: SplitsDirOpt = None,
        allow_missing: AllowMissingOpt = False,
        trust_splits: TrustSplitsOpt = False,
        accept_code_change: AcceptCodeOpt = False,
        precision: PrecisionOpt = None,
    ) -> None:
        """Train where no checkpoint exists, evaluate the test episodes, store and print the results."""
        cli = _cli_values(episodes, seed, device, backbone, backbone_weights, train_seed, results, workers, precision, track)
        _evaluate(ctx, method, dataset, shots, cli, checkpoint, no_train, retrain,
                  _data_options(splits_dir, allow_missing, trust_splits), accept_code_change)

    @app.command("evaluate")
    @handle_errors
    def evaluate_command(
        ctx: typer.Context,
        method: Annotated[str, typer.Argument(help="Method name.")],
        dataset: DatasetOpt,
        shots: Annotated[str, typer.Option(help="Comma-separated shots.")] = "1,5",
        episodes: EpisodesOpt = None,
        seed: SeedOpt = None,
        checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint to evaluate (one shot).")] = None,
        device: DeviceOpt = None,
        backbone: BackboneOpt = None,
        backbone_weights: WeightsOpt = None,
        track: TrackOpt = None,
        train_seed: TrainSeedOpt = None,
        results: ResultsOpt = None,
        workers: WorkersOpt = None,
        splits_dir: SplitsDirOpt = None,
        allow_missing: AllowMissingOpt = False,
        trust_splits: TrustSplitsOpt = False,
        accept_code_change: AcceptCodeOpt = False,
        precision: PrecisionOpt = None,
    ) -> None:
        """Evaluate only (never trains): the given or default checkpoint, else the untrained model."""
        cli = _cli_values(episodes, seed, device, backbone, backbone_weights, train_seed, results, workers, precision, track)
        _evaluate(ctx, method, dataset, shots, cli, checkpoint, no_train=checkpoint is None, retrain=False,
                  data=_data_options(splits_dir, allow_missing, trust_splits), accept_code_change=accept_code_change)

    @app.command("train")
    @handle_errors
    def train_command(
        ctx: typer.Context,
        method: Annotated[str, typer.Argument(help="Method name.")],
        dataset: DatasetOpt,
        shot: Annotated[int, typer.Option(min=1, help="Shots per class in training episodes.")] = 1,
        device: DeviceOpt = None,
        backbone: BackboneOpt = None,
        backbone_weights: WeightsOpt = None,
        track: TrackOpt = None,
        train_seed: TrainSeedOpt = None,
        results: ResultsOpt = None,
        workers: WorkersOpt = None,
        splits_dir: SplitsDirOpt = None,
        allow_missing: AllowMissingOpt = False,
        trust_splits: TrustSplitsOpt = False,
        precision: PrecisionOpt = None,
    ) -> None:
        """Meta-train on the train split, select on val (the test split is never read). A killed training resumes
        from its last saved state (every run.save_every_minutes and at each validation) when run again."""
        from fsar_bench.data.benchmarks import open_benchmark
        from fsar_bench.distributed import is_main_process
        from fsar_bench.runner import (build_model, default_checkpoint_path, get_method, resolve_device, train_checkpoint,
                                       training_lock)
        from fsar_bench.store import check_writable

        config = config_from(ctx, _cli_values(None, None, device, backbone, backbone_weights, train_seed, results, workers,
                                              precision, track))
        if is_main_process():  # before any work: training must be able to save its checkpoint
            check_writable(config.path("results"))
        entry = get_method(config, method)
        benchmark = open_benchmark(dataset, config, _data_options(splits_dir, allow_missing, trust_splits))
        model = build_model(config, entry, benchmark, resolve_device(config.run["device"]), shot)
        path = default_checkpoint_path(config, model, dataset, shot, benchmark.frames_from)
        with training_lock(path, is_main_process(), log=stderr.print):
            train_checkpoint(config, entry, benchmark, model, shot, path)
        stderr.print(f"best-on-val checkpoint: {path}")

"""Generated dataset trees laid out like each real benchmark, and how videos are found in them.

The helpers here build trees at the *real* paths of the official split files (read from
``tests.conftest.SHARED_SPLITS_DIR``, never copied into the project), computed independently of
fsar_bench's layout code: one tiny video per container, hard-linked to every path.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fsar_bench.cli.main import app
from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import DataOptions, open_benchmark
from fsar_bench.errors import DataError
from tests.conftest import PROJECT_ROOT, SHARED_SPLITS_DIR

SPLIT_DIRS = {
    "ssv2-full": "trx/ssv2_OTAM", "ssv2-small": "trx/ssv2_CMN", "kinetics100": "trx/kinetics_CMN",
    "kinetics100-molo": "molo/kinetics100", "ucf101": "trx/ucf_ARN", "hmdb51": "trx/hmdb_ARN",
}
TEST_FILES = {"ssv2-full": "testlist07.txt", "kinetics100-molo": "test_few_shot.txt"}
CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}
runner = CliRunner()


def invoke(config: Path, *args: str):
    """Run the CLI in-process with a wide terminal (messages are not wrapped)."""
    return runner.invoke(app, ["--config", str(config), *map(str, args)], env={"COLUMNS": "400"})


# --------------------------------------------------------------------------- tiny media
def write_video(path: Path, frames: int = 10, size: int = 224, fps: int = 12) -> Path:
    """A tiny video (codec chosen by suffix) whose frames are a rising grey level.

    WebM (libvpx) is encoded in a fresh interpreter once decord is loaded: PyAV cannot open the
    libvpx encoders in a process where decord's bundled FFmpeg was loaded first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [str(path), CODECS[path.suffix], str(frames), str(size), str(fps)]
    if path.suffix == ".webm" and "decord" in sys.modules:
        code = f"import numpy as np\n{inspect.getsource(_encode_here)}\nimport sys\n_encode_here(*sys.argv[1:])"
        subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
    else:
        _encode_here(*args)
    return path


def _encode_here(path: str, codec: str, frames: str, size: str, fps: str) -> None:
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width = stream.height = int(size)
        stream.pix_fmt = "yuv420p"
        for index in range(int(frames)):
            array = np.full((int(size), int(size), 3), 20 * index % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder: Path, frames: int = 10, size: int = 32) -> Path:
    """A frame folder ``img_00001.jpg`` ... (JPEG via PIL)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(frames):
        Image.fromarray(np.full((size, size, 3), 20 * index % 256, np.uint8)).save(folder / f"img_{index + 1:05d}.jpg")
    return folder


def split_lines(name: str, partition: str = "test") -> list[str]:
    """Non-blank lines of a benchmark's real split file for ``partition``."""
    folder = SHARED_SPLITS_DIR / SPLIT_DIRS[name]
    if name == "kinetics100-molo":
        path = folder / f"{partition}_few_shot.txt"
    else:
        path = folder / {"train": "trainlist", "val": "vallist", "test": "testlist"}[partition]
        path = path.with_name(path.name + ("07.txt" if name == "ssv2-full" else "03.txt"))
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def real_path(name: str, line: str) -> str:
    """Where a split line's video is in the benchmark's default layout (written out per benchmark)."""
    if name in ("ssv2-full", "ssv2-small"):
        return line.split("/")[-1] + ".webm"            # 20bn-something-something-v2/<id>.webm
    if name == "kinetics100":
        return line + ".mp4"                            # <class name>/<id>_<start>_<end>.mp4
    if name == "kinetics100-molo":
        return line.split("//", 1)[1]                   # train_256/<class_folder>/<video>.mp4
    return line + ".avi"                                # UCF101, HMDB51: <class>/<name>.avi


def build_tree(root: Path, relative_paths: list[str], template: Path) -> list[Path]:
    """Hard-link ``template`` to every relative path under ``root`` (copies when links fail)."""
    made = []
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(template, path)
        except OSError:
            shutil.copyfile(template, path)
        made.append(path)
    return made


def write_config(folder: Path, datasets: dict[str, dict[str, str]], extra: str = "") -> Path:
    """bench.toml with results in ``folder``, the project's methods, no decoding workers, and ``[datasets.*]``."""
    text = (f'[paths]\nresults = "results"\ncache = "{folder / "cache"}"\nmethods = "{PROJECT_ROOT / "methods"}"\n'
            f'splits = "{folder / "splits"}"\n[run]\nworkers = 0\n')
    for name, settings in datasets.items():
        text += f"[datasets.{name}]\n" + "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    path = folder / "bench.toml"
    path.write_text(text + extra)
    return path


def reduced_splits(folder: Path, name: str, classes: int = 6, per_class: int = 3) -> Path:
    """Small split files made of the first lines of the real ones (per partition: ``classes`` x ``per_class``).

    Their sha256 differs from the manifest: open them with ``--trust-splits``.
    """
    target = folder / f"splits-{name}"
    target.mkdir(parents=True, exist_ok=True)
    for partition in ("train", "val", "test"):
        kept: dict[str, list[str]] = {}
        for line in split_lines(name, partition):
            label = line.split("//")[0] if "//" in line else line.split("/")[0]
            if label in kept or len(kept) < classes:
                kept.setdefault(label, [])
                if len(kept[label]) < per_class:
                    kept[label].append(line)
        source = next((SHARED_SPLITS_DIR / SPLIT_DIRS[name]).glob(f"{partition}*"))
        (target / source.name).write_text("\n".join(l for lines in kept.values() for l in lines) + "\n")
    return target


def finegym_lists(folder: Path, per_class: int = 6) -> dict[int, list[str]]:
    """Gym99-style element lists (``<clip id> <label>``, train and val files) for all 99 classes."""
    rng = np.random.default_rng(0)
    clips: dict[int, list[str]] = {}
    lines = {"gym99_train_element_v1.1.txt": [], "gym99_val_element.txt": []}
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    for label in range(99):
        for k in range(per_class):
            youtube = "".join(rng.choice(alphabet, 11))
            clip = f"{youtube}_E_{k * 100:06d}_{k * 100 + 40:06d}_A_{k:04d}_{k + 3:04d}"
            clips.setdefault(label, []).append(clip)
            lines["gym99_val_element.txt" if k == per_class - 1 else "gym99_train_element_v1.1.txt"].append(f"{clip} {label}")
    folder.mkdir(parents=True, exist_ok=True)
    for file, content in lines.items():
        (folder / file).write_text("\n".join(content) + "\n")
    return clips


# --------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {suffix: write_video(folder / f"tiny{suffix}") for suffix in CODECS}


@pytest.mark.parametrize("name", sorted(SPLIT_DIRS))
def test_default_layout_finds_every_test_video_at_its_real_path(tmp_path, media, name):
    lines = split_lines(name)
    paths = [real_path(name, line) for line in lines]
    build_tree(tmp_path / "videos", paths, media[Path(paths[0]).suffix])
    config = load_config(write_config(tmp_path, {name: {"root": str(tmp_path / "videos"),
                                                        "splits_dir": str(SHARED_SPLITS_DIR / SPLIT_DIRS[name])}}))
    benchmark = open_benchmark(name, config)
    test = benchmark.present_partition("test")
    assert test.num_videos == len(lines) and benchmark.missing["test"] == ()
    assert {str(benchmark.video_path(v)) for v in test.all_video_ids()} == {str(tmp_path / "videos" / p) for p in paths}


def test_frame_folder_layout_and_other_layouts(tmp_path, media):
    lines = split_lines("hmdb51")[:5]
    for line in lines:
        write_frames(tmp_path / "frames" / line, frames=3)
    splits = reduced_splits(tmp_path, "hmdb51", classes=1, per_class=5)
    config = load_config(write_config(tmp_path, {"hmdb51": {"root": str(tmp_path / "frames"), "layout": "frames",
                                                            "splits_dir": str(splits)}}))
    benchmark = open_benchmark("hmdb51", config, DataOptions(trust_splits=True))
    assert benchmark.present_partition("test").num_videos == 5
    assert benchmark.video_path(lines[0]).is_dir()
    flat = open_benchmark("hmdb51", config, DataOptions(trust_splits=True, layout="flat"))
    assert flat.video_path(lines[0]) == tmp_path / "frames" / (lines[0].split("/")[1] + ".avi")


def test_unexpected_layout_names_the_layout_an_example_path_and_the_layout_that_fits(tmp_path, media):
    lines = split_lines("ucf101")
    build_tree(tmp_path / "videos", [line.split("/")[1] + ".avi" for line in lines], media[".avi"])  # flat
    config = write_config(tmp_path, {"ucf101": {"root": str(tmp_path / "videos"),
                                                "splits_dir": str(SHARED_SPLITS_DIR / SPLIT_DIRS["ucf101"])}})
    result = invoke(config, "data", "check", "ucf101", "--partition", "test")
    assert result.exit_code == 3
    expected = tmp_path / "videos" / (lines[0] + ".avi")
    assert "layout 'class-folders' ({class}/{name}.avi)" in result.output
    assert f"looked for {expected}" in result.output
    assert 'Layout \'flat\' ({name}.avi) finds' in result.output and 'layout = "flat" under [datasets.ucf101]' in result.output
    assert invoke(config, "data", "check", "ucf101", "--partition", "test", "--layout", "flat").exit_code == 0


def test_missing_root_and_unset_root_exit_3(tmp_path):
    splits = str(SHARED_SPLITS_DIR / SPLIT_DIRS["hmdb51"])
    config = write_config(tmp_path, {"hmdb51": {"root": str(tmp_path / "nowhere"), "splits_dir": splits}})
    result = invoke(config, "data", "check", "hmdb51")
    assert result.exit_code == 3 and f"dataset root {tmp_path / 'nowhere'} of hmdb51 does not exist" in result.output
    config = write_config(tmp_path, {"hmdb51": {"splits_dir": splits}})
    result = invoke(config, "data", "check", "hmdb51")
    assert result.exit_code == 3 and "no video folder set for hmdb51" in result.output and "[datasets.hmdb51]" in result.output
    with pytest.raises(DataError, match="no video folder set"):
        open_benchmark("hmdb51", load_config(config)).present_partition("test")


def test_unknown_layout_is_a_usage_error(tmp_path):
    config = write_config(tmp_path, {"ucf101": {"root": str(tmp_path), "layout": "flatt"}})
    result = invoke(config, "data", "check", "ucf101")
    assert result.exit_code == 2 and "Did you mean 'flat'" in result.output


def test_command_line_paths_are_relative_to_the_current_folder(tmp_path, media, monkeypatch):
    lines = split_lines("hmdb51")
    build_tree(tmp_path / "here" / "videos", [real_path("hmdb51", line) for line in lines], media[".avi"])
    config = write_config(tmp_path / "here", {"hmdb51": {"root": "videos"}})  # relative to bench.toml's folder
    monkeypatch.chdir(tmp_path)
    splits = str(SHARED_SPLITS_DIR / SPLIT_DIRS["hmdb51"])
    assert invoke(config, "data", "check", "hmdb51", "-p", "test", "--splits-dir", splits).exit_code == 0
    result = invoke(config, "data", "check", "hmdb51", "-p", "test", "--splits-dir", splits, "--root", "here/videos")
    assert result.exit_code == 0 and f"hmdb51: {tmp_path / 'here' / 'videos'} (layout class-folders)" in result.output

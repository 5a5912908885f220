"""Video readers: frame folders behind the same interface; each kind of bad file named, on both engines."""

from __future__ import annotations

import numpy as np
import pytest

from fsar_bench.data.loading import iterate_clip_batches
from fsar_bench.data.video import FrameFolderReader, VideoError, list_frames, open_reader, read_clip
from tests.test_datasets_trees import write_frames, write_video

ENGINES = ["decord", "pyav"]


def test_frame_folder_natural_order_and_centre_frames(tmp_path):
    from PIL import Image

    folder = tmp_path / "v"
    folder.mkdir()
    for index in (1, 2, 10, 3, 20):
        Image.fromarray(np.full((8, 8, 3), index * 10, np.uint8)).save(folder / f"img_{index}.jpg")
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in list_frames(folder)] == ["img_1.jpg", "img_2.jpg", "img_3.jpg", "img_10.jpg", "img_20.jpg"]
    clip = read_clip(open_reader(), folder, frames=2)  # segment centres of 5 frames: 1, 3
    assert clip.shape == (2, 8, 8, 3) and abs(int(clip[0, 0, 0, 0]) - 20) <= 2 and abs(int(clip[1, 0, 0, 0]) - 100) <= 2


@pytest.mark.parametrize("engine", ENGINES)
def test_reader_dispatches_folders_and_files(tmp_path, engine):
    reader = open_reader(engine)
    write_frames(tmp_path / "frames", frames=9, size=16)
    video = write_video(tmp_path / "v.mp4", frames=12, size=32)
    assert reader.num_frames(tmp_path / "frames") == 9 and reader.num_frames(video) == 12
    assert read_clip(reader, tmp_path / "frames", 8).shape == (8, 16, 16, 3)
    assert read_clip(reader, video, 8).shape == (8, 32, 32, 3)


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm"])
@pytest.mark.parametrize("engine", ENGINES)
def test_bad_video_files_raise_named_kinds(tmp_path, engine, suffix):
    reader = open_reader(engine)
    good = write_video(tmp_path / f"good{suffix}", frames=12, size=32)
    assert read_clip(reader, good, 8).shape == (8, 32, 32, 3)
    short = write_video(tmp_path / f"short{suffix}", frames=5, size=32)
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    expected = {tmp_path / f"missing{suffix}": {"missing"}, short: {"too-short"}, corrupt: {"unreadable"},
                empty: {"empty"}, truncated: {"unreadable", "corrupt", "too-short"}}
    for path, kinds in expected.items():
        with pytest.raises(VideoError) as caught:
            read_clip(reader, path, 8)
        assert caught.value.kind in kinds and caught.value.path == path and str(path) in str(caught.value)


def test_bad_frame_folders_raise_named_kinds(tmp_path):
    reader = FrameFolderReader()
    (tmp_path / "empty").mkdir()
    write_frames(tmp_path / "short", frames=3)
    write_frames(tmp_path / "broken", frames=10)
    (tmp_path / "broken" / "img_00005.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    write_frames(tmp_path / "mixed", frames=10)
    write_frames(tmp_path / "mixed-big", frames=10, size=48)
    (tmp_path / "mixed-big" / "img_00010.jpg").rename(tmp_path / "mixed" / "img_00010.jpg")
    cases = {"nowhere": ("missing", "frame folder not found"), "empty": ("empty", "no .jpg"),
             "short": ("too-short", "has 3 frames"), "broken": ("corrupt", "frame img_00005.jpg cannot be decoded"),
             "mixed": ("corrupt", "frame img_00010.jpg is 48x48")}
    for name, (kind, text) in cases.items():
        with pytest.raises(VideoError) as caught:
            reader.read(tmp_path / name, lambda n: _choose(tmp_path / name, n))
        assert caught.value.kind == kind and text in caught.value.reason, (name, caught.value)


def _choose(path, total):
    from fsar_bench.data.video import clip_choice

    return sorted({*clip_choice(path, 8)(total), total - 1})


def test_loader_stops_on_a_bad_frame_folder_naming_it(tmp_path):
    write_frames(tmp_path / "a", frames=8)
    write_frames(tmp_path / "b", frames=2)
    with pytest.raises(VideoError, match="has 2 frames, fewer than the 8"):
        list(iterate_clip_batches([tmp_path / "a", tmp_path / "b"], frames=8, workers=0))

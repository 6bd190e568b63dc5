"""The fixed training split of issue #17 (rfr/tools/train/split.py) on a tiny fake labelled folder."""

from __future__ import annotations

from pathlib import Path

from rfr.tools.train.split import rank_identities, training_identities

JPEG_HEAD = b"\xff\xd8\xff\xe0" + bytes(60)  # sniffed as a JPEG by content


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(JPEG_HEAD)
    return root


def test_most_photos_first_ties_by_name_singles_never(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lfw", {"Zed": 5, "Amy": 3, "Bob": 3, "Cat": 3, "Solo": 1, "Duo": 2})
    assert training_identities(root, n=3) == frozenset({"Zed", "Amy", "Bob"})
    assert training_identities(root, n=10) == frozenset({"Zed", "Amy", "Bob", "Cat", "Duo"})


def test_non_photos_do_not_count(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "lfw", {"Amy": 2, "Bob": 2})
    (root / "Amy" / "notes.txt").write_text("not a photo")
    (root / "Amy" / "more.txt").write_text("not a photo either")
    assert training_identities(root, n=1) == frozenset({"Amy"})  # a tie on 2 photos: by name
    (root / "Bob" / "extra.jpg").write_bytes(JPEG_HEAD)
    assert training_identities(root, n=1) == frozenset({"Bob"})


def test_rank_identities_default_is_200() -> None:
    counts = {f"id{i:04d}": 2 + i % 7 for i in range(300)}
    chosen = rank_identities(counts)
    assert len(chosen) == 200
    assert min(counts[c] for c in chosen) >= max(counts[c] for c in counts if c not in chosen)

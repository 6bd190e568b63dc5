"""The fixed training split of issue #17: which labelled identities a fine-tuned model may learn from.

TRAINING identities are the :data:`TRAINING_IDENTITIES` identities with at least two photos that have the most
photos, ties broken by name (ascending). Training (``rfr train lowres``) sees only these; ``rfr eval`` leaves
them out of every gallery and probe set, baseline included, so no number is measured on a face a model learnt.
On the shared LFW folder (2,211 identities, 809 with >= 2 photos, 4,009 photos) they hold 1,173 photos and the
cut falls at 4 photos, leaving 609 identities with >= 2 photos and 1,402 with one for evaluation.
"""

from __future__ import annotations

from pathlib import Path

from rfr.core.image_files import identity_folders

TRAINING_IDENTITIES = 200
"""How many identities training may see (issue #17's split; the rest stay for evaluation)."""


def rank_identities(counts: dict[str, int], n: int = TRAINING_IDENTITIES) -> frozenset[str]:
    """The ``n`` identities of ``counts`` (identity -> photo count) with >= 2 photos and the most photos,
    ties broken by name; fewer when fewer identities have two photos."""
    eligible = [(-count, name) for name, count in counts.items() if count >= 2]
    return frozenset(name for _, name in sorted(eligible)[:n])


def training_identities(root: Path, n: int = TRAINING_IDENTITIES) -> frozenset[str]:
    """The training identities of the labelled folder ``root`` (``root/<identity>/<photo>``).

    Photos are counted by :func:`rfr.core.image_files.identity_folders` (decided by content). Raises
    ``FileNotFoundError`` when ``root`` is not a folder.
    """
    return rank_identities({name: len(photos) for name, photos in identity_folders(root).items()}, n)

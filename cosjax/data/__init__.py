"""Synthetic reasoning tasks in the VBVR format (first frame + prompt -> solving video), with scorers."""

from cosjax.data.case import FRAMES, SIZE, Case
from cosjax.data.prompts import FAMILY_PROMPTS, PROMPTS
from cosjax.data.tasks import FAMILIES, Dataset, Family, family, generate, make_dataset, score
from cosjax.data.vbvr_io import read_video, write_vbvr_case

__all__ = [
    "FAMILIES",
    "FAMILY_PROMPTS",
    "FRAMES",
    "PROMPTS",
    "SIZE",
    "Case",
    "Dataset",
    "Family",
    "family",
    "generate",
    "make_dataset",
    "read_video",
    "score",
    "write_vbvr_case",
]

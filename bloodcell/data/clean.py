"""Content-hash de-duplication before splitting, so no image leaks between train and test."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from bloodcell.data.table import ImageTable


def deduplicate(table: ImageTable) -> tuple[ImageTable, dict]:
    """Drop exact duplicates (same decoded pixels).

    Within one class the first copy is kept; a picture filed under two or more classes is dropped
    entirely, since its label cannot be trusted. Returns the cleaned table and a report of counts
    and the dropped ids.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(table.hashes):
        groups[h].append(i)
    keep = np.ones(len(table), dtype=bool)
    in_class, cross_class = [], []
    for members in groups.values():
        if len(members) == 1:
            continue
        if len({int(table.labels[i]) for i in members}) > 1:
            keep[members] = False
            cross_class.append([table.ids[i] for i in members])
        else:
            keep[members[1:]] = False
            in_class.append([table.ids[i] for i in members])
    report = {
        "images_in": len(table),
        "in_class_duplicates_removed": int(sum(len(g) - 1 for g in in_class)),
        "cross_class_images_dropped": int(sum(len(g) for g in cross_class)),
        "in_class_groups": in_class,
        "cross_class_groups": cross_class,
    }
    report["images_out"] = int(keep.sum())
    return table.select(keep), report

"""Findings: the clusters whose maps put their energy somewhere the rest of their class does not, in words.

For each cluster of a class, the region (a third of each axis: "top-left", "centre", "end", ...) where the
cluster's median energy share exceeds the rest of the class's the most; with masks or boxes, the median
energy inside the object too. A finding's score is that excess plus the loss of energy on the object, so a
cluster that moves its maps' energy off the object and into one corner ranks first.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from keras_cam.audit.statistics import ChunkStatistics, region_extent, region_names

#: Clusters smaller than this share of their class, or than MIN_IMAGES images, are not reported.
MIN_SHARE = 0.02
MIN_IMAGES = 3
#: Clusters whose median energy share in the same region exceeds the rest of their class's by this much
#: are one strategy, merged (see `merge_strategies`).
MERGE_EXCESS = 0.2


def _median(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")


def distinctive_region(regions: np.ndarray, inside: np.ndarray, rest: np.ndarray):
    """The region where the median energy share of `inside` exceeds that of `rest` the most: (index, the
    two medians)."""
    here = np.median(regions[inside], axis=0)
    there = np.median(regions[rest], axis=0)
    r = int(np.argmax(here - there))
    return r, float(here[r]), float(there[r])


def merge_strategies(regions: np.ndarray, members: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Merges the clusters of one class that single out the same region (by MERGE_EXCESS or more).

    Spectral clustering splits a class along every direction its maps vary in: when objects sit anywhere,
    maps that share a corner mark but differ in where the object is fall into several clusters. They are one
    strategy ("energy in the top-left corner"), so they are reported, and numbered, as one cluster
    (CoRelAy's SpRAy keeps them apart; docs/architecture.md, "Dataset audit").
    """
    from keras_cam.audit.clustering import by_size

    if clusters.max(initial=0) < 1:
        return clusters
    merged = clusters.copy()
    first: dict = {}
    for c in range(int(clusters.max()) + 1):
        inside, rest = members[clusters == c], members[clusters != c]
        if inside.size == 0 or rest.size == 0:
            continue
        r, here, there = distinctive_region(regions, inside, rest)
        if here - there >= MERGE_EXCESS:
            merged[clusters == c] = first.setdefault(r, c)
    return by_size(merged)


def cluster_findings(stats: ChunkStatistics, members: np.ndarray, clusters: np.ndarray, class_index: int,
                     class_name: str) -> List[Dict[str, Any]]:
    """One finding per reportable cluster of a class with two clusters or more.

    Args:
        stats: the pass's statistics.
        members: global indices of the class's maps.
        clusters: their clusters (same order).
        class_index, class_name: the class.
    """
    names = region_names(stats.spatial)
    out = []
    if clusters.max(initial=0) < 1:
        return out
    for c in range(int(clusters.max()) + 1):
        inside, rest = members[clusters == c], members[clusters != c]
        share = inside.size / members.size
        if share < MIN_SHARE or inside.size < MIN_IMAGES or rest.size == 0:
            continue
        r, here, there = distinctive_region(stats.regions, inside, rest)
        text = (f"class '{class_name}': {share:.0%} of images ({inside.size}, cluster {c}) put {here:.0%} "
                f"of the map's energy in the {names[r]} region ({region_extent(stats.spatial, r)}), vs "
                f"{there:.0%} for the rest of the class")
        score = here - there
        finding = {"class": class_name, "class_index": class_index, "cluster": c, "share": share,
                   "images": inside, "region": names[r], "energy_in_region": here,
                   "energy_in_region_rest": there}
        mask_here, mask_there = _median(stats.in_mask[inside]), _median(stats.in_mask[rest])
        if np.isfinite(mask_here) and np.isfinite(mask_there):
            text += f"; median energy inside the object {mask_here:.2f} vs {mask_there:.2f} for the rest"
            score += max(0.0, mask_there - mask_here)
            finding.update(energy_in_mask=mask_here, energy_in_mask_rest=mask_there)
        finding.update(text=text + ".", score=score * min(1.0, share / 0.1))
        out.append(finding)
    return out


def rank(findings: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Most notable first (by score, then by share)."""
    return sorted(findings, key=lambda f: (-f["score"], -f["share"]))

"""Findings: the clusters whose maps put their energy somewhere the rest of their class does not, in words.

Each cluster of a class is described by where its maps put their energy: when its maps peak at one fixed
spot (their peaks' median absolute deviation is at most FIXED_SPOT of each axis, as a watermark or a corner
tag would make them), the region (a third of each axis: "top-left", "centre", "end", ...) holding that
spot; otherwise the region where its median energy share exceeds the rest of the class's the most. With
masks or boxes, its median energy inside the object too.

Objects sit anywhere, so clusters also form by where the object is; a cluster becomes a *finding* only when
it looks like a shortcut: its maps peak at one fixed spot and, with masks or boxes, that spot is off the
object (most of its maps' maxima miss the object); or, with masks or boxes, they put at least MIN_LOSS less
energy on the object than the rest of the class, wherever they peak; and either way, the cluster's median
energy share in its region exceeds the rest's by MIN_EXCESS or more. A finding's score is the region excess
plus the loss on the object, so a cluster that moves its energy off the object and into one corner ranks
first.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from keras_cam.auditing.statistics import ChunkStatistics, region_extent, region_names

#: Clusters smaller than this share of their class, or than MIN_IMAGES images, are not findings.
MIN_SHARE = 0.02
MIN_IMAGES = 3
#: A cluster is a finding when its maps put this much less energy on the object than the rest of the class...
MIN_LOSS = 0.1
#: ... or peak at one spot: their peaks' median absolute deviation at most this share of each axis.
FIXED_SPOT = 0.03
#: ... and, either way, its median energy share in its region exceeds the rest of the class's by this much.
MIN_EXCESS = 0.1
#: Clusters whose median energy share in the same region exceeds the rest of their class's by this much
#: are one strategy, merged (see `merge_strategies`); so are clusters peaking at the same fixed spot.
MERGE_EXCESS = 0.2


def _median(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")


def fixed_spot(peaks: np.ndarray, spatial: Sequence[int]) -> Optional[np.ndarray]:
    """The median peak of a cluster's maps when they peak at one spot, else None."""
    centre = np.median(peaks, axis=0)
    spread = np.median(np.abs(peaks - centre), axis=0) / np.asarray(spatial)
    return centre if spread.max() <= FIXED_SPOT else None


def _region_of(spot: np.ndarray, spatial: Sequence[int]) -> int:
    from keras_cam.auditing.statistics import thirds

    digits = [int(np.searchsorted(thirds(n), v, side="right")) - 1 for v, n in zip(spot, spatial)]
    return int(np.ravel_multi_index(digits, (3,) * len(spatial)))


def describe_region(stats: ChunkStatistics, inside: np.ndarray, rest: np.ndarray
                    ) -> Tuple[int, float, float, Optional[np.ndarray]]:
    """Where a cluster puts its energy: (region index, its median share there, the rest's, fixed spot)."""
    here = np.median(stats.regions[inside], axis=0)
    there = np.median(stats.regions[rest], axis=0)
    spot = fixed_spot(stats.peaks[inside], stats.spatial)
    r = _region_of(spot, stats.spatial) if spot is not None else int(np.argmax(here - there))
    return r, float(here[r]), float(there[r]), spot


def merge_strategies(stats: ChunkStatistics, members: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Merges the clusters of one class that peak at the same fixed spot, or single out the same region
    (by MERGE_EXCESS or more); a fixed-spot strategy then keeps exactly the maps that peak at its spot.

    Spectral clustering splits a class along every direction its maps vary in: when objects sit anywhere,
    maps that share a corner mark but differ in where the object is fall into several clusters. They are one
    strategy ("energy in the top-left corner"), so they are reported, and numbered, as one cluster
    (CoRelAy's SpRAy keeps them apart; docs/architecture.md, "Dataset audit").
    """
    from keras_cam.auditing.clustering import by_size

    if clusters.max(initial=0) < 1:
        return clusters
    merged = clusters.copy()
    spots: List[Tuple[np.ndarray, int]] = []
    regions: Dict[int, int] = {}
    near = np.maximum(1.0, 2 * FIXED_SPOT * np.asarray(stats.spatial))
    for c in range(int(clusters.max()) + 1):
        inside, rest = members[clusters == c], members[clusters != c]
        if inside.size == 0 or rest.size == 0:
            continue
        r, here, there, spot = describe_region(stats, inside, rest)
        if spot is not None:
            target = next((k for s, k in spots if (np.abs(s - spot) <= near).all()), None)
            if target is None:
                spots.append((spot, c))
                target = c
            merged[clusters == c] = target
        elif here - there >= MERGE_EXCESS:
            merged[clusters == c] = regions.setdefault(r, c)
    if spots:
        _refine(stats, members, merged, spots, near)
    return by_size(merged)


def _refine(stats: ChunkStatistics, members: np.ndarray, merged: np.ndarray,
            spots: List[Tuple[np.ndarray, int]], near: np.ndarray) -> None:
    """A fixed-spot strategy is the maps that peak at its spot: with many maps, k-means mixes some of them
    with maps whose objects lie close by (measured on 6,700 maps of one class: recall 0.79, or precision
    0.77, before this step; 1.00 and 1.00 after). Maps of other clusters that peak at the spot join it; its
    maps that peak outside the spot's region leave for the other cluster whose mean small map is closest
    (cosine). In place."""
    fixed = np.array([k for _, k in spots])
    peaks = stats.peaks[members]
    for spot, k in spots:
        at_spot = (np.abs(peaks - spot) <= near).all(axis=1)
        merged[at_spot & ~np.isin(merged, fixed)] = k
    # Leaving takes more than joining: a map whose peak is off the spot but in the spot's region (a third of
    # each axis) stays, as maps peak a cell or two apart at the resolution of the layer they come from.
    leaving = np.zeros(len(members), bool)
    region = np.array([_region_of(p, stats.spatial) for p in peaks])
    for spot, k in spots:
        leaving |= (merged == k) & (region != _region_of(spot, stats.spatial))
    others = np.unique(merged[~np.isin(merged, fixed)])
    if not leaving.any() or not others.size:
        return

    def unit(rows: np.ndarray) -> np.ndarray:
        x = stats.features[members[rows]].astype(np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    centres = np.stack([unit(np.flatnonzero(merged == o)).mean(axis=0) for o in others])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    merged[leaving] = others[np.argmax(unit(np.flatnonzero(leaving)) @ centres.T, axis=1)]


def cluster_findings(stats: ChunkStatistics, members: np.ndarray, clusters: np.ndarray, class_index: int,
                     class_name: str) -> List[Dict[str, Any]]:
    """One description per cluster (of a class with two clusters or more), `notable` where it is a finding.

    Args:
        stats: the pass's statistics.
        members: global indices of the class's maps.
        clusters: their clusters (same order).
        class_index, class_name: the class.
    """
    names = region_names(stats.spatial)
    axes = {1: ("sample",), 2: ("row", "column"), 3: ("slice", "row", "column")}[len(stats.spatial)]
    out = []
    if clusters.max(initial=0) < 1:
        return out
    for c in range(int(clusters.max()) + 1):
        inside, rest = members[clusters == c], members[clusters != c]
        if inside.size == 0 or rest.size == 0:
            continue
        share = inside.size / members.size
        r, here, there, spot = describe_region(stats, inside, rest)
        text = (f"class '{class_name}': {share:.0%} of images ({inside.size}, cluster {c}) put {here:.0%} "
                f"of the map's energy in the {names[r]} region ({region_extent(stats.spatial, r)}), vs "
                f"{there:.0%} for the rest of the class")
        if spot is not None:
            text += ", their maxima at one spot (" + ", ".join(f"{a} {int(v)}" for a, v in zip(axes, spot)) + ")"
        score = here - there
        finding = {"class": class_name, "class_index": class_index, "cluster": c, "share": share,
                   "images": inside, "region": names[r], "energy_in_region": here,
                   "energy_in_region_rest": there, "fixed_spot": spot is not None}
        mask_here, mask_there = _median(stats.in_mask[inside]), _median(stats.in_mask[rest])
        if np.isfinite(mask_here) and np.isfinite(mask_there):
            text += f"; median energy inside the object {mask_here:.2f} vs {mask_there:.2f} for the rest"
            score += max(0.0, mask_there - mask_here)
            finding.update(energy_in_mask=mask_here, energy_in_mask_rest=mask_there)
            # a fixed spot off the object (most maxima miss it), or energy clearly moved off the object
            pointing = _median(stats.pointing[inside])
            notable = mask_there - mask_here >= MIN_LOSS or (spot is not None and pointing < 0.5)
        else:
            notable = spot is not None
        notable = notable and share >= MIN_SHARE and inside.size >= MIN_IMAGES \
            and here - there >= MIN_EXCESS
        finding.update(text=text + ".", score=score * min(1.0, share / 0.1), notable=bool(notable))
        out.append(finding)
    return out


def rank(findings: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The notable ones, most notable first (by score, then by share)."""
    return sorted((f for f in findings if f["notable"]), key=lambda f: (-f["score"], -f["share"]))

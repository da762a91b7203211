"""Which prompts repeat each other (exactly or nearly): the one rule behind the leakage checks (core.curate.leakage)
and the split of a version (core.curate.datasets), so a prompt and its near copy never land in different splits.

Two prompts are the same (``exact``) when the content hash of core.curate.dedup says so (lowercased,
whitespace-collapsed roles and contents of the turns; the system prompt is left out), and nearly the same
(``near``) when the MinHash LSH index of core.curate.dedup finds them and their estimated Jaccard similarity of
word 3-grams is at least its ``NEAR_DUP_THRESHOLD``: the rule an import uses to flag near duplicates.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from core.curate.dedup import NEAR_DUP_THRESHOLD, NearDuplicateIndex, content_hash, normalise_text


def prompt_keys(messages: list[dict]) -> tuple[str, str]:
    """(exact hash, normalised near text) of a prompt's messages, as core.curate.dedup computes them for an
    example, both over the turns (roles and contents) without the system prompt: a system prompt is instructions,
    not the question asked, and an uploaded eval prompt seldom carries the training data's."""
    turns = [{"role": m.get("role") or "", "content": m.get("content") or ""} for m in messages
             if m.get("role") != "system"]
    return content_hash("", turns), normalise_text("\n".join(m["content"] for m in turns))


def match_prompts(queries: list[list[dict]], targets: list[list[dict]]) -> list[list[tuple[int, str, float]]]:
    """For each query prompt, the targets it repeats: ``(target index, "exact"|"near", similarity)``.

    One MinHash LSH index of the targets (core.curate.dedup.NearDuplicateIndex, its threshold and shingles);
    each query's band keys give the candidates, kept when their signatures agree on at least NEAR_DUP_THRESHOLD
    of the permutations (the Jaccard estimate), so LSH's chance collisions are not reported.
    """
    out: list[list[tuple[int, str, float]]] = [[] for _ in queries]
    if not queries or not targets:
        return out
    target_keys = [prompt_keys(m) for m in targets]
    query_keys = [prompt_keys(m) for m in queries]
    by_hash: dict[str, list[int]] = defaultdict(list)
    for j, (digest, _) in enumerate(target_keys):
        by_hash[digest].append(j)
    index = NearDuplicateIndex()
    target_sigs = index.signatures([near for _, near in target_keys], normalised=True)
    index.add_many([j for j, (_, near) in enumerate(target_keys) if near],
                   target_sigs[[bool(near) for _, near in target_keys]])
    query_sigs = index.signatures([near for _, near in query_keys], normalised=True)
    for i, ((digest, near), bands) in enumerate(zip(query_keys, index.band_keys(query_sigs))):
        found = {j: (j, "exact", 1.0) for j in by_hash.get(digest, ())}
        if near:
            for j in sorted(index.candidates(bands) - found.keys()):
                similarity = float(np.mean(query_sigs[i] == target_sigs[j]))
                if similarity >= NEAR_DUP_THRESHOLD:
                    found[j] = (j, "near", round(similarity, 3))
        out[i] = list(found.values())
    return out


def prompt_groups(prompts: list[tuple[int, list[dict]]]) -> dict[int, int]:
    """``{id: group id}`` for ``(id, messages)`` pairs: prompts that repeat each other, directly or through a chain
    of near copies, share a group, named by its smallest id (a prompt without copies is its own group)."""
    ids = [i for i, _ in prompts]
    parent = {i: i for i in ids}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, hits in zip(ids, match_prompts([m for _, m in prompts], [m for _, m in prompts])):
        for j, _, _ in hits:
            a, b = root(i), root(ids[j])
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {i: root(i) for i in ids}

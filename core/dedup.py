"""Duplicates: exact ones by a content hash of normalised text, near ones with datasketch MinHash LSH.

Exact: sha256 of the lowercased, whitespace-collapsed system prompt, turns (with their roles) and Alpaca
input. Two examples that differ only in case or spacing have the same hash.

Near: word 3-gram shingles of a bounded prefix of the normalised text (long answers that share their
first few hundred words are near duplicates for curation purposes, and the bound keeps the cost per
record flat). The shingles of a whole batch of records are hashed at once with numpy, using the
permutations of a datasketch ``MinHash``, and each signature goes into a datasketch ``MinHashLSH`` as a
``LeanMinHash``. Vectorising the hashing is what keeps imports of 100,000 records above the bench target;
per-record ``MinHash.update_batch`` calls spend most of their time in Python overhead.
"""
from __future__ import annotations

import hashlib
import zlib
from typing import Hashable, Iterable

import numpy as np

NEAR_DUP_THRESHOLD = 0.8
NUM_PERM = 64
SHINGLE_WORDS = 3
PREFIX_CHARS = 2000  # near-duplicate detection looks at this much normalised text per example

def normalise_text(text: str) -> str:
    """Lowercase and collapse runs of whitespace to one space (what "the same text" means for dedup)."""
    return " ".join(text.lower().split())


def record_text(record: dict) -> str:
    """All the text of a record in one string: system, each turn, input."""
    parts = [record.get("system") or ""]
    parts += [t["content"] for t in record.get("turns") or []]
    parts.append(record.get("input") or "")
    return "\n".join(p for p in parts if p)


def near_text(record: dict) -> str:
    """The text compared for near duplicates: the turns and input (a shared system prompt is not content)."""
    parts = [t["content"] for t in record.get("turns") or []]
    parts.append(record.get("input") or "")
    return "\n".join(p for p in parts if p)


def content_hash(system: str, turns: list, input: str = "") -> str:
    """sha256 of the normalised system prompt, roles and contents of the turns, and input."""
    h = hashlib.sha256()
    h.update(normalise_text(system).encode())
    for turn in turns:
        h.update(b"\x1e" + turn["role"].encode() + b"\x1f" + normalise_text(turn["content"]).encode())
    h.update(b"\x1d" + normalise_text(input).encode())
    return h.hexdigest()


def record_hash(record: dict) -> str:
    return content_hash(record.get("system") or "", record.get("turns") or [], record.get("input") or "")


def search_text(record: dict) -> str:
    """Lowercased text used by the queue's search (LIKE works the same on SQLite and PostgreSQL)."""
    return normalise_text(record_text(record))


def _shingle_hashes(text: str) -> np.ndarray:
    """uint32 hashes of the word 3-grams of the first PREFIX_CHARS of the normalised text."""
    words = normalise_text(text)[:PREFIX_CHARS].split(" ")
    if len(words) < SHINGLE_WORDS:
        grams = [" ".join(words)]
    else:
        grams = [" ".join(words[i:i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)]
    # crc32 is a fine 32-bit shingle hash once the murmur finaliser mixes it, and it is in the stdlib.
    return np.fromiter(map(zlib.crc32, map(str.encode, grams)), dtype=np.uint32, count=len(grams))


class NearDuplicateIndex:
    """MinHash LSH over texts; ``check_and_add`` says which earlier text a new one nearly duplicates."""

    def __init__(self, threshold: float = NEAR_DUP_THRESHOLD, num_perm: int = NUM_PERM, seed: int = 1):
        from datasketch import MinHash, MinHashLSH

        self.num_perm = num_perm
        self.seed = seed
        template = MinHash(num_perm=num_perm, seed=seed)
        self.scheme = template.scheme
        a, b = template.permutations
        self._a = a.astype(np.uint32)
        self._b = b.astype(np.uint32)
        # Band keys as ints (the process-local hash of the band bytes) take a third of the memory of bytes keys;
        # the index lives only for one import, so a per-process hash is enough.
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, hashfunc=hash)
        # datasketch's in-memory storage keeps a set per bucket (216 bytes even for one key) and a second
        # table of every key's band hashes for removals, which an import never does. Tuples of keys and
        # no removal table halve the index's memory: 100,000 records fit the bench's 300 MB budget.
        self.lsh.hashtables = [_Buckets() for _ in self.lsh.hashtables]
        self.lsh.keys = _NoRemovals()

    def signatures(self, texts: list[str]) -> np.ndarray:
        """MinHash signatures (n x num_perm, uint32) of ``texts``, hashed in one vectorised pass."""
        if not texts:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        hashes = [_shingle_hashes(t) for t in texts]
        lengths = np.fromiter((len(h) for h in hashes), dtype=np.int64, count=len(hashes))
        flat = np.concatenate(hashes)
        # Mix the input hashes (murmur3 finaliser), as datasketch's affine32 scheme does, then permute.
        flat = _fmix32(flat)
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        # Chunks of shingles keep the (shingles x num_perm) matrix small.
        step = 8192
        row = 0
        while row < len(texts):
            end_row = row
            total = 0
            while end_row < len(texts) and (total == 0 or total + lengths[end_row] <= step):
                total += lengths[end_row]
                end_row += 1
            lo, hi = starts[row], starts[row] + total
            permuted = flat[lo:hi, None] * self._a[None, :] + self._b[None, :]
            out[row:end_row] = np.minimum.reduceat(permuted, starts[row:end_row] - lo, axis=0)
            row = end_row
        return out

    def _lean(self, signature: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme=self.scheme)

    def add(self, key: Hashable, signature: np.ndarray) -> None:
        self.lsh.insert(key, self._lean(signature), check_duplication=False)

    def query(self, signature: np.ndarray) -> list:
        return self.lsh.query(self._lean(signature))

    def check_and_add(self, keys: Iterable[Hashable], texts: list[str]) -> list:
        """For each text in order: the key of an earlier near-duplicate (or None); then index it."""
        found = []
        for key, sig in zip(keys, self.signatures(texts)):
            lean = self._lean(sig)
            matches = self.lsh.query(lean)
            found.append(min(matches, key=_sort_key) if matches else None)
            self.lsh.insert(key, lean, check_duplication=False)
        return found


class _Buckets(dict):
    """One LSH band: bucket -> tuple of keys (the part of datasketch's storage API that insert/query use)."""

    def get(self, bucket, default=()):
        return dict.get(self, bucket, default)

    def insert(self, bucket, *keys, **_):
        self[bucket] = self.get(bucket) + keys


class _NoRemovals:
    """Stands in for the LSH's key table, which only ``remove`` and duplicate checks read."""

    def insert(self, *_, **__):
        pass

    def __contains__(self, _):
        return False


def _sort_key(key):
    return (0, key) if isinstance(key, int) else (1, str(key))


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h

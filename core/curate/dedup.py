"""Duplicates: exact ones by a content hash of normalised text, near ones with datasketch MinHash LSH.

Exact: sha256 of the lowercased, whitespace-collapsed system prompt, turns (with their roles) and Alpaca
input. Two examples that differ only in case or spacing have the same hash.

Near: word 3-gram shingles of a bounded prefix of the normalised text (long answers that share their
first few hundred words are near duplicates for curation purposes, and the bound keeps the cost per
record flat). A whole batch of texts is shingled and hashed at once with numpy: every 3-gram's bytes get
a polynomial hash from prefix sums (no string per word or gram is built), mixed by murmur3 finalisers,
and the MinHash permutations of a datasketch ``MinHash`` are applied one permutation at a time over the
whole batch. Signatures go into a datasketch ``MinHashLSH``; a batch computes its band keys the way
``MinHashLSH`` does, vectorised, and uses its hash tables directly. Per-record Python work (joining
grams, per-record ``MinHash.update_batch`` or ``MinHashLSH.insert`` calls) is what used to dominate an
import of 100,000 records.

Band keys use the process's ``hash`` of the band bytes, so an index is only valid within one process:
it is built, queried and dropped by one import or one edit, never stored.
"""
from __future__ import annotations

import hashlib
import re
from typing import Hashable, Iterable

import numpy as np

NEAR_DUP_THRESHOLD = 0.8
NUM_PERM = 64
SHINGLE_WORDS = 3
PREFIX_CHARS = 2000  # near-duplicate detection looks at this much normalised text per example

_WHITESPACE = re.compile(r"\s")  # the characters str.split() splits on (str.isspace)
BIG_TEXT = 1 << 16  # texts at least this long are processed in pieces
_PIECE = 1 << 20


def _pieces(text: str) -> Iterable[str]:
    """``text`` in slices of about _PIECE characters, each cut at a whitespace character, so no word and no
    lowercasing context (Greek final sigma) spans two slices."""
    start, n = 0, len(text)
    while start < n:
        end = start + _PIECE
        if end < n:
            m = _WHITESPACE.search(text, end)
            end = m.start() if m else n
        yield text[start:end]
        start = end


def normalise_text(text: str) -> str:
    """Lowercase and collapse runs of whitespace to one space (what "the same text" means for dedup).

    A big text is done a slice at a time (same result): splitting a 15 MB answer into words at once builds
    millions of string objects, ~10x the text in memory."""
    if len(text) < BIG_TEXT:
        return " ".join(text.lower().split())
    return " ".join(part for part in (" ".join(piece.lower().split()) for piece in _pieces(text)) if part)


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text`` (a slice at a time for big texts, see normalise_text)."""
    if len(text) < BIG_TEXT:
        return len(text.split())
    return sum(len(piece.split()) for piece in _pieces(text))


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
    return _hash_normalised(normalise_text(system), turns, [normalise_text(t["content"]) for t in turns],
                            normalise_text(input))


def _hash_normalised(system: str, turns: list, contents: list[str], input: str) -> str:
    h = hashlib.sha256(system.encode())
    for turn, content in zip(turns, contents):
        h.update(b"\x1e" + turn["role"].encode() + b"\x1f" + content.encode())
    h.update(b"\x1d" + input.encode())
    return h.hexdigest()


def record_hash(record: dict) -> str:
    return content_hash(record.get("system") or "", record.get("turns") or [], record.get("input") or "")


def search_text(record: dict) -> str:
    """Lowercased text used by the queue's search (LIKE works the same on SQLite and PostgreSQL)."""
    return normalise_text(record_text(record))


def record_keys(record: dict) -> tuple[str, str, str]:
    """``(record_hash, search_text, normalised near_text)`` of a record, normalising each part only once.

    The search text is the normalised parts joined by single spaces, which is what normalising the
    joined parts gives (a part that is only whitespace contributes nothing to either); the near text
    is the same without the system prompt.
    """
    turns = record.get("turns") or []
    system = normalise_text(record.get("system") or "")
    contents = [normalise_text(t["content"]) for t in turns]
    input = normalise_text(record.get("input") or "")
    near = " ".join(p for p in (*contents, input) if p)
    return (_hash_normalised(system, turns, contents, input),
            f"{system} {near}" if system and near else system or near, near)


# Shingles are hashed as byte strings with a polynomial hash mod 2**64 (odd base, so invertible): with
# prefix sums of byte * base**i over a chunk of texts, the hash of any span is one subtraction and one
# multiplication, so every 3-gram of a chunk is hashed at once without building a string per word or gram.
_BASE = 0x100000001B3
_BASE_INV = pow(_BASE, -1, 1 << 64)
_CHUNK_CHARS = 1 << 17  # characters hashed together: bounds the per-chunk arrays (and the cached powers)
_powers: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _base_powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(base**i, base**-i) mod 2**64 for i < n (at least), cached and grown by doubling."""
    size = max(_powers) if _powers else 0
    if size < n:
        size = max(n, 2 * size, 1 << 16)
        _powers.clear()
        up, down = (np.concatenate((np.ones(1, dtype=np.uint64), np.cumprod(np.full(size - 1, b, dtype=np.uint64))))
                    for b in (_BASE, _BASE_INV))
        _powers[size] = (up, down)
    return _powers[max(_powers)]


def _shingle_hashes(texts: list[str], normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 hashes of every text's word 3-grams, one array for all texts; number of 3-grams per text).

    The shingles of a text are the 3-grams of the words of the first PREFIX_CHARS characters of its
    normalised form (``normalised`` says the texts already are). A text of fewer than three words has
    one shingle: all of it.
    """
    if not normalised:
        texts = [normalise_text(t) for t in texts]
    hashes: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    chunk: list[str] = []
    size = 0
    for text in texts:
        text = text[:PREFIX_CHARS]
        chunk.append(text)
        size += len(text) + 1
        if size >= _CHUNK_CHARS:
            _add_chunk(chunk, hashes, counts)
            chunk, size = [], 0
    _add_chunk(chunk, hashes, counts)
    return np.concatenate(hashes), np.concatenate(counts)


def _add_chunk(chunk: list[str], hashes: list, counts: list) -> None:
    if chunk:
        h, c = _chunk_shingles(chunk)
        hashes.append(h)
        counts.append(c)


def _chunk_shingles(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # Normalised texts hold no newline, so one joins them; spaces and newlines then separate the words.
    data = np.frombuffer("\n".join(texts).encode(), dtype=np.uint8)
    seps = np.flatnonzero((data == 32) | (data == 10))
    word_start = np.concatenate(([0], seps + 1))
    word_end = np.concatenate((seps, [len(data)]))
    text_of_word = np.concatenate(([0], np.cumsum(data[seps] == 10)))
    n_words = np.bincount(text_of_word, minlength=len(texts))  # >= 1: an empty text is one empty word
    first_word = np.cumsum(n_words) - n_words
    n_grams = np.maximum(n_words - (SHINGLE_WORDS - 1), 1)
    gram_first = np.cumsum(n_grams) - n_grams
    start_word = np.repeat(first_word - gram_first, n_grams) + np.arange(int(n_grams.sum()))
    end_word = np.minimum(start_word + (SHINGLE_WORDS - 1), np.repeat(first_word + n_words - 1, n_grams))
    powers, inverse = _base_powers(len(data) + 1)
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum(data * powers[:len(data)], out=prefix[1:])
    s, e = word_start[start_word], word_end[end_word]
    grams = (prefix[e] - prefix[s]) * inverse[s]  # the hash of bytes s..e as if they started at 0
    return _fmix64_high(grams), n_grams


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
        # The dtype a LeanMinHash stores hash values in, whose bytes MinHashLSH hashes into band keys.
        self._value_dtype = self._lean(np.zeros(num_perm, dtype=np.uint32)).hashvalues.dtype

    def signatures(self, texts: list[str], normalised: bool = False) -> np.ndarray:
        """MinHash signatures (n x num_perm, uint32) of ``texts``, hashed in one vectorised pass.

        ``normalised``: the texts are already ``normalise_text``-ed (saves doing it again).
        """
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        if not texts:
            return out
        flat, n_grams = _shingle_hashes(texts, normalised)
        # Mix the input hashes (murmur3 finaliser), as datasketch's affine32 scheme does, then permute.
        flat = _fmix32(flat)
        starts = np.cumsum(n_grams) - n_grams
        # One permutation at a time over every shingle of the batch: a 1-D multiply-add and a segmented
        # minimum per permutation is several times faster than a (shingles x num_perm) matrix.
        permuted = np.empty_like(flat)
        for p in range(self.num_perm):
            np.multiply(flat, self._a[p], out=permuted)
            permuted += self._b[p]
            out[:, p] = np.minimum.reduceat(permuted, starts)
        return out

    def _lean(self, signature: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme=self.scheme)

    def band_keys(self, signatures: np.ndarray) -> list[tuple]:
        """Per signature, its LSH band keys: what ``MinHashLSH`` computes for its hash tables, vectorised.

        ``MinHashLSH`` hashes the bytes of each band of the byte-swapped hash values of the ``LeanMinHash``.
        """
        values = signatures.astype(self._value_dtype).byteswap()
        width = values.dtype.itemsize
        columns = []
        for start, end in self.lsh.hashranges:
            band = np.ascontiguousarray(values[:, start:end]).view(f"V{width * (end - start)}").ravel()
            columns.append(map(hash, band.tolist()))  # void items come back as bytes
        return list(zip(*columns))

    def add(self, key: Hashable, signature: np.ndarray) -> None:
        self.lsh.insert(key, self._lean(signature), check_duplication=False)

    def add_many(self, keys: Iterable[Hashable], signatures: np.ndarray) -> None:
        """Index many signatures at once (same result as ``add`` for each)."""
        tables = self.lsh.hashtables
        for key, bands in zip(keys, self.band_keys(signatures)):
            for table, band in zip(tables, bands):
                table.insert(band, key)

    def query(self, signature: np.ndarray) -> list:
        return self.lsh.query(self._lean(signature))

    def candidates(self, bands: tuple) -> set:
        """The keys sharing at least one band with ``bands`` (one entry of ``band_keys``): a query that adds
        nothing (the leakage check asks many prompts against one index of eval prompts)."""
        found = set()
        for table, band in zip(self.lsh.hashtables, bands):
            found.update(table.get(band))
        return found

    def check_and_add(self, keys: Iterable[Hashable], texts: list[str], normalised: bool = False) -> list:
        """For each text in order: the key of an earlier near-duplicate (or None); then index it."""
        return self.check_and_add_bands(keys, self.bands(texts, normalised))

    def bands(self, texts: list[str], normalised: bool = False) -> list[tuple]:
        """The LSH band keys of ``texts`` (the costly part of ``check_and_add``, which an import does before it
        opens its write transaction)."""
        return self.band_keys(self.signatures(texts, normalised))

    def check_and_add_bands(self, keys: Iterable[Hashable], all_bands: list[tuple]) -> list:
        """``check_and_add`` for band keys computed by ``bands``."""
        found = []
        tables = self.lsh.hashtables
        for key, bands in zip(keys, all_bands):
            matches = set()
            for table, band in zip(tables, bands):
                matches.update(table.get(band))
            found.append(min(matches, key=_sort_key) if matches else None)
            for table, band in zip(tables, bands):
                table.insert(band, key)
        return found


class _Buckets(dict):
    """One LSH band: bucket -> its keys (the part of datasketch's storage API that insert/query use).

    Most buckets hold one key, stored bare (a one-key tuple would cost 56 bytes per band per record);
    buckets with more hold a tuple. So a tuple key is always stored inside a tuple, never bare.
    """

    def get(self, bucket, default=()):
        keys = dict.get(self, bucket, default)
        return keys if type(keys) is tuple else (keys,)

    def insert(self, bucket, *keys, **_):
        held = dict.get(self, bucket)
        if held is None:
            self[bucket] = keys[0] if len(keys) == 1 and type(keys[0]) is not tuple else keys
        else:
            self[bucket] = (held if type(held) is tuple else (held,)) + keys


class _NoRemovals:
    """Stands in for the LSH's key table, which only ``remove`` and duplicate checks read."""

    def insert(self, *_, **__):
        pass

    def __contains__(self, _):
        return False


def _sort_key(key):
    return (0, key) if isinstance(key, int) else (1, str(key))


def _fmix64_high(h: np.ndarray) -> np.ndarray:
    """The high 32 bits of the murmur3 64-bit finaliser (a polynomial hash's low bits mix poorly)."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return (h >> np.uint64(32)).astype(np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h

"""A knowledge document's bytes read as plain text with its section headings, then cut into chunks.

Markdown and plain text are read as they are (headings are Markdown's ``#`` lines); HTML through BeautifulSoup
(scripts, styles and navigation dropped, ``<h1>``-``<h6>`` kept as headings); PDF through pypdf, page by page
(each page's number becomes its heading). The text is then cut at headings and blank lines into chunks of at most
``MAX_CHUNK_CHARS`` characters, each with the heading it sits under, so a retrieved chunk and a draft's origin
("Generated from handbook.md §4") name a passage a person can find again.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePath

from core.errors import InvalidInput

KINDS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".html": "html",
         ".htm": "html", ".pdf": "pdf"}
KIND_WORDS = {"markdown": "Markdown", "text": "plain text", "html": "HTML", "pdf": "PDF"}
MAX_DOCUMENT_BYTES = 20 << 20  # an upload bigger than this is refused with its size
MAX_PDF_PAGES = 2000
MAX_CHUNK_CHARS = 1200  # about 300 tokens: several fit in a small model's prompt beside the question
HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass
class Chunk:
    ordinal: int  # its § number, from 1
    heading: str  # the section it sits under ("Billing > Direct debit"), "" before the first heading
    text: str


def kind_of(file_name: str) -> str:
    """The document kind of ``file_name`` from its extension, or InvalidInput naming the kinds accepted."""
    kind = KINDS.get(PurePath(file_name).suffix.lower())
    if kind is None:
        raise InvalidInput(f"{file_name!r} is not a kind of document the studio reads: use Markdown (.md), "
                           "plain text (.txt), HTML (.html) or PDF (.pdf).")
    return kind


def _decode(data: bytes, file_name: str) -> str:
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        raise InvalidInput(f"{file_name!r} is not UTF-8 text: save it as UTF-8 and upload it again.") from None


def _html_text(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "template"]):
        tag.decompose()
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            tag.replace_with(f"\n\n{'#' * level} {' '.join(tag.get_text(' ').split())}\n\n")
    for tag in soup.find_all(["p", "div", "section", "article", "li", "tr", "br", "pre", "table", "ul", "ol"]):
        tag.insert_before("\n\n" if tag.name in ("p", "div", "section", "article", "table", "pre") else "\n")
    body = soup.body or soup
    return body.get_text()


def _pdf_text(data: bytes, file_name: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InvalidInput(f"{file_name!r} is an encrypted PDF: upload a copy without a password.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise InvalidInput(f"{file_name!r} has {len(reader.pages):,} pages, more than the "
                               f"{MAX_PDF_PAGES:,} a document may have: split it.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as err:
        raise InvalidInput(f"{file_name!r} is not a readable PDF ({err}).") from None
    return "\n\n".join(f"# Page {i}\n\n{text}" for i, text in enumerate(pages, 1) if text.strip())


def read_document(file_name: str, data: bytes) -> tuple[str, str]:
    """``(kind, text)`` of an uploaded document: plain text with Markdown headings. InvalidInput for a kind not
    read, an empty or oversized file, an encrypted or broken PDF, or a file with no text in it."""
    kind = kind_of(file_name)
    if not data:
        raise InvalidInput(f"{file_name!r} is empty.")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidInput(f"{file_name!r} is {len(data) / (1 << 20):.1f} MiB, over the "
                           f"{MAX_DOCUMENT_BYTES >> 20} MiB a document may have: split it.")
    if kind == "pdf":
        text = _pdf_text(data, file_name)
    elif kind == "html":
        text = _html_text(data)
    else:
        text = _decode(data, file_name)
    text = re.sub(r"[ \t\r\f\v]+\n", "\n", text.replace("\x00", "")).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    if not text:
        raise InvalidInput(f"{file_name!r} holds no text (a scanned PDF needs OCR first).")
    return kind, text


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading path, paragraphs) in order; the heading path joins the open headings with " > "."""
    out: list[tuple[str, list[str]]] = [("", [])]
    open_headings: list[tuple[int, str]] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        while lines and HEADING_RE.match(lines[0]):
            level_marks, title = HEADING_RE.match(lines[0]).groups()
            open_headings = [h for h in open_headings if h[0] < len(level_marks)] + [(len(level_marks), title)]
            out.append((" > ".join(t for _, t in open_headings), []))
            lines = lines[1:]
        if lines:
            out[-1][1].append("\n".join(lines))
    return [(heading, paras) for heading, paras in out if paras]


def _split_long(paragraph: str, limit: int) -> list[str]:
    """A paragraph longer than ``limit`` cut at sentence ends, else at spaces, else hard."""
    pieces, current = [], ""
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    return pieces + ([current] if current else [])


def chunk_text(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    """Chunks of ``text``: never across a heading, whole paragraphs packed up to ``max_chars`` characters, a longer
    paragraph cut at sentence ends. Numbered from 1 in reading order."""
    chunks: list[Chunk] = []
    for heading, paragraphs in _sections(text):
        current = ""
        for paragraph in paragraphs:
            for piece in _split_long(paragraph, max_chars) if len(paragraph) > max_chars else [paragraph]:
                if current and len(current) + 2 + len(piece) > max_chars:
                    chunks.append(Chunk(len(chunks) + 1, heading, current))
                    current = piece
                else:
                    current = f"{current}\n\n{piece}" if current else piece
        if current:
            chunks.append(Chunk(len(chunks) + 1, heading, current))
    return chunks

"""Readers of the formats the corpus packages ship their text in: R's serialized character
vectors, HTML manuals, roff man pages, WordNet's data files, the GCIDE dictionary and SWORD's
OSIS markup, and the Brown Corpus's tagged text. Each takes the format's text or bytes and
returns plain text, so each is tested on a small sample without the package
(tests/evaluation/test_corpora.py)."""

from __future__ import annotations

import html
import re
import struct
from collections.abc import Iterable
from html.parser import HTMLParser


def r_strings(blob: bytes) -> list[str] | None:
    """The character vector in one serialized R object (XDR format, version 2 or 3), or None
    when the object is something else; an NA string reads as an empty line."""
    if not blob.startswith(b"X\n"):
        return None
    (version,) = struct.unpack_from(">i", blob, 2)
    pos = 14  # "X\n", then the format, writer and reader versions
    if version == 3:
        (n,) = struct.unpack_from(">i", blob, pos)
        pos += 4 + n  # the native encoding's name
    flags, length = struct.unpack_from(">ii", blob, pos)
    pos += 8
    if flags & 0xFF != 16:  # STRSXP
        return None
    out = []
    for _ in range(length):
        flags, n = struct.unpack_from(">ii", blob, pos)
        pos += 8
        if flags & 0xFF != 9:  # CHARSXP
            return None
        out.append("" if n < 0 else blob[pos : pos + n].decode("utf-8", errors="replace"))
        pos += max(n, 0)
    return out


class _HtmlText(HTMLParser):
    """The text of an HTML page: only what lies in the element with `root` among its attribute
    values (the whole page when None), without code blocks, scripts, navigation and
    permalinks, one line per block element."""

    BLOCKS = frozenset(("p", "div", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr",
                        "table", "br", "title", "blockquote"))  # fmt: skip
    SKIP_TAGS = frozenset(("pre", "script", "style", "head"))

    def __init__(self, root: str | None, skip_classes: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.root, self.skip_classes = root, skip_classes
        self.inside = 0 if root else 1  # depth in the root element's tag (1 = in it)
        self.root_tag = ""
        self.skipping, self.skip_tag = 0, ""
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skipping:
            self.skipping += tag == self.skip_tag
            return
        values = {v for _, v in attrs if v}
        classes = {c for k, v in attrs if k == "class" and v for c in v.split()}
        if self.root and not self.inside and self.root in values:
            self.inside, self.root_tag = 1, tag
            return
        if self.root and self.inside and tag == self.root_tag:
            self.inside += 1
        if tag in self.SKIP_TAGS or classes & self.skip_classes:
            self.skipping, self.skip_tag = 1, tag
        elif tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            self.skipping -= tag == self.skip_tag
            if self.skipping:
                return  # the skipped element's own end falls through: it counted in `inside`
        if self.root and self.inside and tag == self.root_tag:
            self.inside -= 1
        if tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if self.inside and not self.skipping:
            self.chunks.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.chunks).split("\n"))
        return "\n".join(line for line in lines if line)


def html_text(page: str, root: str | None = None, skip_classes: Iterable[str] = ()) -> str:
    parser = _HtmlText(root, frozenset(skip_classes))
    parser.feed(page)
    parser.close()
    return parser.text()


_ROFF_ESCAPES = {"lq": "\u201c", "rq": "\u201d", "em": "\u2014", "en": "\u2013", "aq": "'",
                 "dq": '"', "bu": "\u2022", "co": "\u00a9", "rg": "\u00ae", "mu": "\u00d7",
                 "ti": "~", "ha": "^", "rs": "\\", "oq": "\u2018", "cq": "\u2019",
                 "ga": "`", "ul": "_", "lh": "", "rh": "", "Tm": "\u2122"}  # fmt: skip


_ROFF_INLINE = {"B", "I", "SM", "SB", "BR", "BI", "IB", "IR", "RB", "RI", "UR", "MT"}


_ROFF_ALTERNATING = {"BR", "BI", "IB", "IR", "RB", "RI"}


_ROFF_HEADINGS = {"SH", "SS"}


_ROFF_DROP_BLOCKS = {"EX": "EE", "TS": "TE", "de": ".", "ig": "."}  # code, tables, macros


_ROFF_ESCAPE = re.compile(
    r'\\(?:"(?P<comment>.*)|f(?:\[[^\]]*\]|\(..|.)|s[-+]?\d+'
    r"|\*(?:\[(?P<s1>[^\]]*)\]|\((?P<s2>..)|(?P<s3>.))|\[(?P<c1>[^\]]*)\]|\((?P<c2>..)|(?P<one>.))"
)


def _roff_escape(m: re.Match) -> str:
    name = m.group("s1") or m.group("s2") or m.group("s3") or m.group("c1") or m.group("c2")
    if name:
        return _ROFF_ESCAPES.get(name, "")
    one = m.group("one")
    if one is None or one in "&|^c%:/,)!{}":  # a comment, font or size change, or no output
        return ""
    return {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "t": " "}.get(one, one)


def _roff_escapes(line: str) -> str:
    return _ROFF_ESCAPE.sub(_roff_escape, line)


def roff_text(source: str) -> str:
    """A man page's running text: comments, requests, tables, code examples and escapes out,
    the words of font macros (.B, .BR, ...) kept, paragraphs joined into lines."""
    out: list[str] = []
    para: list[str] = []
    dropping = ""
    tag_line = False

    def flush() -> None:
        if para:
            out.append(" ".join(para))
            para.clear()

    source = re.sub(r"(?<!\\)\\\n", "", source)  # a line ending in \ goes on on the next
    for raw in source.splitlines():
        if dropping:
            if raw.startswith("." + dropping) or (dropping == "." and raw.startswith("..")):
                dropping = ""
            continue
        if raw.startswith(('.\\"', "'\\\"")):  # comments
            continue
        if raw[:1] in (".", "'"):
            m = re.match(r"[.'](\S+)\s*(.*)", raw)
            name, args = (m.group(1), m.group(2)) if m else ("", "")
            if name in _ROFF_DROP_BLOCKS:
                flush()
                dropping = _ROFF_DROP_BLOCKS[name]
            elif name in _ROFF_HEADINGS:
                flush()
                out.append("")
                out.append(_roff_escapes(args).replace('"', "").strip())
            elif name in _ROFF_INLINE:
                words = re.findall(r'"([^"]*)"|((?:\\.|\S)+)', args)
                parts = [a or b for a, b in words]
                sep = "" if name in _ROFF_ALTERNATING else " "
                text = _roff_escapes(sep.join(parts)).strip()
                if text and name not in ("UR", "MT"):
                    para.append(text)
                if tag_line:
                    flush()
                    tag_line = False
            else:
                flush()
                tag_line = name == "TP"
            continue
        text = _roff_escapes(raw).strip()
        if text:
            para.append(text)
        if tag_line:
            flush()
            tag_line = False
    flush()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def wordnet_glosses(data: dict[str, str], roots: Iterable[str], topics: Iterable[str]) -> str:
    """'lemma, synonym. gloss' for the WordNet synsets under `roots` (noun offsets, by hyponymy)
    and those whose topic domain lies under `topics`; `data` maps a part of speech's letter
    (n, v, a, r) to its data file's text. Synsets in offset order, nouns first."""
    synsets: dict[tuple[str, str], tuple[list[str], list[tuple[str, str, str]], str]] = {}
    for pos, text in data.items():
        for line in text.splitlines():
            if line.startswith(" ") or " | " not in line:
                continue  # the licence header
            head, gloss = line.split(" | ", 1)
            f = head.split()
            n = int(f[3], 16)
            words = [re.sub(r"\(\w+\)$", "", f[4 + 2 * i]).replace("_", " ") for i in range(n)]
            at = 4 + 2 * n  # the pointer count, then (symbol, offset, pos, source/target) each
            ptrs = [(f[at + 1 + 4 * k], f[at + 2 + 4 * k], f[at + 3 + 4 * k])
                    for k in range(int(f[at]))]  # fmt: skip
            synsets[(f[0], pos)] = (words, ptrs, gloss.strip())

    def below(starts: Iterable[str]) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        stack = [(s, "n") for s in starts]
        while stack:
            key = stack.pop()
            if key in seen or key not in synsets:
                continue
            seen.add(key)
            stack += [(o, p) for sym, o, p in synsets[key][1] if sym in ("~", "~i")]
        return seen

    chosen = below(roots)
    domains = below(topics)
    chosen |= {k for k, (_, ptrs, _) in synsets.items()
               if any(sym == ";c" and (o, p) in domains for sym, o, p in ptrs)}  # fmt: skip
    order = {"n": 0, "v": 1, "a": 2, "s": 2, "r": 3}
    out = []
    for key in sorted(chosen, key=lambda k: (order.get(k[1], 4), k[0])):
        words, _, gloss = synsets[key]
        out.append(f"{', '.join(words)}. {gloss}")
    return "\n".join(out)


def gcide_senses(text: str, fields: Iterable[str]) -> str:
    """'Headword. definition' for each sense of the GCIDE (Webster's 1913 and later) that is
    marked with one of `fields`, e.g. '(Med.)'; a sense of a phrase ('{Petrosal bone} (Anat.),
    a bone ...') goes under the phrase. Quotations' authors and derived words with their
    pronunciation ('-- Ad`e*nom"a*tous, a.') are cut off; a sense with markup left is dropped."""
    tag = r"\((?:" + "|".join(re.escape(f) for f in fields) + r")\.\)"
    # up to a source mark ('[1913 Webster]'), the next numbered sense, a phrase's own sense,
    # a blank line
    end = r"(?=\n\s*\[[^\]\n]*\]|\n\s*\d+\.\s|\s*\{[^{}]+\}\s*\([A-Z]|\n\s*\n|\Z)"
    sense = re.compile(r"(?:\{([^{}]+)\}\s*)?" + tag + r"\s*(.*?)" + end, re.S)
    out = []
    for entry in re.split(r"\n(?=\S)", text):
        head = re.match(r"([^\\\n]+?)\s*\\", entry)
        if not head or entry.startswith("00-database"):
            continue
        for m in sense.finditer(entry):
            d = re.sub(r"\{([^{}]*)\}", r"\1", m.group(2))
            d = re.sub(r"\s--[A-Z].*", "", " ".join(d.split())).lstrip(", ")
            d = re.sub(r"\s--\s*\S*[*`\"].*", "", d)  # a derived word with its pronunciation
            d = re.sub(r"\s+AS$", "", d)  # a stray editor's mark the dictionary leaves in
            d = re.sub(r"\[(\w)[=^.~`'\"]?\]|\[[=^.~`'\"](\w)\]",
                       lambda c: c.group(1) or c.group(2), d)  # fmt: skip
            if len(d) > 20 and not re.search(r"[\[\]\\{}*]", d):
                out.append(f"{m.group(1) or head.group(1).strip()}. {d[0].upper()}{d[1:]}")
    return "\n".join(out)


def osis_text(entry: str) -> str:
    """One SWORD entry's OSIS markup as plain text: notes out, tags out, entities decoded."""
    entry = re.sub(r"<note\b.*?</note>", "", entry, flags=re.S)
    entry = re.sub(r"</?(?:div|p|title|l|lb|lg|item|row)\b[^>]*>", "\n", entry)
    entry = re.sub(r"<cell\b[^>]*>", " ", entry)
    text = html.unescape(re.sub(r"<[^>]*>", "", entry))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''", "'"}
_NO_SPACE_AFTER = {"(", "[", "``", "`"}


def brown_text(tagged: str) -> str:
    """Running text from a Brown Corpus file in its tagged form C (`word/tag` tokens, a
    sentence a line, a paragraph begun by a tab): tags dropped, punctuation re-attached (a
    closing quote after the comma or stop the corpus puts outside it, as the printed text had
    it), the corpus's `` and '' quotes written as ", its doubled ; ? and ! once, one paragraph
    a line."""
    paragraphs: list[list[str]] = []
    for line in tagged.splitlines():
        tokens = [t.rsplit("/", 1)[0] for t in line.split() if "/" in t]
        if not tokens:
            continue
        if line.startswith("\t") or not paragraphs:
            paragraphs.append([])
        paragraphs[-1] += tokens
    out = []
    for tokens in paragraphs:
        text, glue = "", True
        for token in tokens:
            if not glue and token not in _NO_SPACE_BEFORE:
                text += " "
            text += '"' if token in ("``", "''") else token
            glue = token in _NO_SPACE_AFTER
        text = re.sub(r'(?<=\S)"([,.?!])', r'\1"', re.sub(r"([;?!])\1", r"\1", text))
        out.append(text)
    return "\n".join(out)

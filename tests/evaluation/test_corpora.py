"""`make corpora` (evaluation/corpora.py and formats.py) without the network: the sources that
need no download (this Python's standard library) build, cap and skip on a second run, and the
extractors turn tiny hand-made package files into clean text."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from evaluation.corpora import MAX_BYTES, SOURCES, _brown, _r_lazyload_texts, build, cap
from evaluation.formats import (
    brown_text,
    gcide_senses,
    html_text,
    osis_text,
    roff_text,
    wordnet_glosses,
)


def test_a_second_build_does_nothing_and_sources_are_capped(tmp_path: Path) -> None:
    local = [s for s in SOURCES if all(p.registry == "local" for p in s.packages)]
    assert {s.domain for s in local} == {"code"}
    lines: list[str] = []
    manifest = build(tmp_path, local, lines.append)
    for source in local:
        text = (tmp_path / "code" / f"{source.name}.txt").read_text(encoding="utf-8")
        assert 1_000_000 < len(text.encode()) <= MAX_BYTES
        assert "def " in text and "import " in text
        assert manifest[f"code/{source.name}"]["licence"] == "PSF-2.0"
    lines.clear()
    build(tmp_path, local, lines.append)
    assert all("up to date" in line for line in lines) and len(lines) == len(local)
    # text extracted by other code (an older reader) is stale under the same pins
    stale = json.loads((tmp_path / "manifest.json").read_text())
    stale[f"code/{local[0].name}"]["extractors"] = "older"
    (tmp_path / "manifest.json").write_text(json.dumps(stale))
    lines.clear()
    build(tmp_path, local, lines.append)
    assert "up to date" not in lines[0] and "up to date" in lines[-1]


def test_cap_cuts_at_a_line_end_and_normalises_blank_runs() -> None:
    text = "a" * 10 + "\n\n\n\n" + "b" * 10 + "\n" + "c" * 10
    assert cap(text, 1000) == "a" * 10 + "\n\n" + "b" * 10 + "\n" + "c" * 10 + "\n"
    assert cap(text, 20) == "a" * 10 + "\n\n"


def test_every_domain_has_two_sources_and_every_package_is_pinned() -> None:
    domains: dict[str, int] = {}
    for s in SOURCES:
        domains[s.domain] = domains.get(s.domain, 0) + 1
        assert all(p.version for p in s.packages) and s.licence
    assert len(domains) >= 7 and min(domains.values()) >= 2


def _r_vector(lines: list[str | None]) -> bytes:
    """A character vector serialized as R writes it (XDR, version 3)."""
    out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(lines))
    for line in lines:
        data = b"" if line is None else line.encode()
        out += struct.pack(">ii", 0x40009, -1 if line is None else len(data)) + data
    return out


def test_r_lazyload_texts_reads_each_character_vector_in_file_order(tmp_path: Path) -> None:
    integers = b"X\n" + struct.pack(">iiiii", 2, 0x040201, 0x020300, 13, 1) + b"\0\0\0\1"
    rdb = b""
    for blob in (_r_vector(["EMMA", None, "Emma Woodhouse, handsome"]), integers,
                 _r_vector(["PERSUASION"])):  # fmt: skip
        rdb += struct.pack(">i", len(blob)) + zlib.compress(blob)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "Rdata.rdb").write_bytes(rdb)
    assert _r_lazyload_texts([tmp_path]) == "EMMA\n\nEmma Woodhouse, handsome\n\nPERSUASION"


def test_html_text_keeps_the_main_prose_without_code_or_navigation() -> None:
    page = """<html><head><title>T</title></head><body>
    <div class="related">Previous | Next</div>
    <div class="body" role="main"><h1>Classes<a class="headerlink" href="#c">¶</a></h1>
    <p>A class is
       a <em>template</em>.</p><div class="highlight"><pre>class A: pass</pre></div>
    <ul><li>one</li><li>two &amp; three</li></ul></div>
    <div class="footer">Copyright</div></body></html>"""
    assert html_text(page, "main", ["headerlink"]) == (
        "Classes\nA class is a template.\none\ntwo & three"
    )
    docbook = '<div class="navheader">Prev</div><p>Vacuum</p><div class="toc"><p>x</p></div>'
    assert html_text(docbook, None, ["navheader", "toc"]) == "Vacuum"
    skipped_inside = "<div role=main><p>in</p><div class=x>s</div></div><div>sidebar</div>"
    assert html_text(skipped_inside, "main", ["x"]) == "in"  # the root still ends where it does


def test_roff_text_keeps_running_text_and_drops_requests_tables_and_code() -> None:
    page = r""".\" Copyright and licence
.TH SIGNAL 7 2023-02-05
.SH NAME
signal \- overview of signals
.SH DESCRIPTION
A process can change the disposition of a signal using
.BR sigaction (2)
or
.IR "signal handler" ,
see \(lqman\(rq \fBnow\fP.
.TP
.B Term
Default action is to terminate the process.
.TS
tab;
l l.
SIGHUP	1
.TE
.EX
int main(void);
.EE
.BR \-s\ \fIservice\fP ", " \-\-service
.B "sprof [option]... shared\
 [data]"
"""
    assert roff_text(page) == (
        "NAME\nsignal - overview of signals\n\nDESCRIPTION\n"
        "A process can change the disposition of a signal using sigaction(2) or signal handler, "
        "see \u201cman\u201d now.\nTerm\nDefault action is to terminate the process.\n"
        "-s service, --service sprof [option]... shared [data]"
    )


def test_wordnet_glosses_follow_hyponyms_and_topic_domains() -> None:
    nouns = "\n".join([
        "  1 This software and database is being provided",
        "00000001 26 n 01 disease 0 001 ~ 00000002 n 0000 | an impairment of health",
        "00000002 26 n 02 flu 0 influenza 0 001 @ 00000001 n 0000 | a viral infection",
        "00000003 09 n 01 medicine 0 000 | the science of treating illness",
        "00000004 26 n 01 joy 0 000 | a feeling of happiness",
    ])  # fmt: skip
    adjectives = "00000005 00 a 01 febrile(a) 0 001 ;c 00000003 n 0000 | having a fever"
    got = wordnet_glosses({"n": nouns, "a": adjectives}, ["00000001"], ["00000003"])
    assert got == (
        "disease. an impairment of health\nflu, influenza. a viral infection\n"
        "febrile. having a fever"
    )


def test_gcide_senses_keep_the_marked_senses_only() -> None:
    text = r"""00-databaseinfo (Med.) not an entry
Abdomen \Ab*do"men\, n. [L.]
   1. (Anat.) The belly, or that part of the body between the
      thorax and the pelvis. --Dunglison.
      [1913 Webster]

   2. (Zool.) The posterior section of the body of an insect.
      [1913 Webster]

Adenoma \Ad`e*no"ma\, n. (Med.) A benign tumor of epithelial tissue. -- {Ad`e*nom"a*tous},
   a.--AS
   [1913 Webster]

Abirritative \Ab*ir"ri*ta*tive\, a. (Med.)
   Characterized by abirritation or debility. AS
   [1913 Webster]

Petrosal \Pe*tro"sal\, a. (Anat.)
   Petrous. -- n. A bone. {Petrosal bone} (Anat.), a bone of the
   skull of man.
   [1913 Webster]
"""
    assert gcide_senses(text, ["Med", "Anat"]) == (
        "Abdomen. The belly, or that part of the body between the thorax and the pelvis.\n"
        "Adenoma. A benign tumor of epithelial tissue.\n"
        "Abirritative. Characterized by abirritation or debility.\n"
        "Petrosal. Petrous. -- n. A bone.\n"
        "Petrosal bone. A bone of the skull of man."
    )


def test_osis_text_drops_notes_and_tags() -> None:
    entry = (
        '<div sID="g1" type="x-p"/><title type="x-s2">Chapter 1</title> <w lemma="H1">God</w>'
        ' said<note placement="foot">A note.</note>, &quot;Light&quot;.<div eID="g1"/>'
        "<table><row><cell>God creates.</cell><cell>(1-2)</cell></row></table>"
    )
    assert osis_text(entry) == 'Chapter 1\nGod said, "Light".\nGod creates. (1-2)'


def test_brown_text_drops_tags_and_rejoins_punctuation_and_quotes() -> None:
    tagged = (
        "\n\n\t``/`` I/ppss saw/vbd your/pp$ fire/nn ,/, ''/'' she/pps said/vbd ./.\n"
        "It's/pps+bez 1/2/cd full/jj (/( or/cc so/rb )/) ;/. ;/.\n\n\n"
        "\tWhy/wrb ?/. ?/.\n"
    )
    assert brown_text(tagged) == '"I saw your fire," she said. It\'s 1/2 full (or so);\nWhy?'


def test_brown_takes_the_samples_of_the_chosen_categories_only(tmp_path: Path) -> None:
    (tmp_path / "cats.txt").write_text("cn01 adventure\ncb01 editorial\ncp01 romance\n")
    for name, word in (("cn01", "Ride"), ("cb01", "Tax"), ("cp01", "Kiss")):
        (tmp_path / name).write_text(f"\t{word}/vb ./.\n")
    assert _brown(("adventure", "romance"))([tmp_path]) == "Ride.\n\nKiss."
    with pytest.raises(SystemExit, match="no sample of learned"):
        _brown(("learned",))([tmp_path])

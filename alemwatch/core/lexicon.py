"""The triage phrase language, compiled to regular expressions.

Clinicians write phrases as words; this turns them into patterns over normalised text:
  `word`      the whole word             `word*`   any word starting with `word`
  `(a|b c)`   one of the choices         `[word]`  optional
  `~N`        up to N other words in between
  a token containing a backslash is a raw regular expression (e.g. `\\d+`).
Matching never crosses a sentence end (. ! ? ;), so a phrase reads inside one sentence.
"""

from __future__ import annotations

import functools
import re
import unicodedata

SEP = r"[^\w.!?;\n]+"
WORD = r"[\w]+"


class PhraseError(ValueError):
    pass


def _split_top(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth < 0:
                raise PhraseError(f"unbalanced brackets in {text!r}")
        if char == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise PhraseError(f"unbalanced brackets in {text!r}")
    parts.append(current)
    return parts


def _token(token: str) -> str:
    if token.startswith("(") and token.endswith(")"):
        choices = _split_top(token[1:-1], "|")
        if any(not c.strip() for c in choices):
            raise PhraseError(f"empty choice in {token!r}")
        return "(?:" + "|".join(_sequence(c.strip()) for c in choices) + ")"
    if "\\" in token:
        try:
            re.compile(token)
        except re.error as exc:
            raise PhraseError(f"bad raw pattern {token!r}: {exc}") from exc
        return token
    if not re.fullmatch(r"[a-z0-9éè'-]+\*?", token):
        raise PhraseError(f"unexpected characters in word {token!r}")
    if token.endswith("*"):
        return re.escape(normalise(token[:-1])) + r"\w*"
    return re.escape(normalise(token))


def _sequence(phrase: str) -> str:
    tokens = [t for t in _split_top(phrase, " ") if t]
    out = ""
    pending = ""  # gaps and optional words waiting for the next word
    for token in tokens:
        gap = re.fullmatch(r"~(\d)", token)
        if gap:
            if out:  # a gap before the first word means nothing
                pending += f"(?:{SEP}{WORD}){{0,{gap.group(1)}}}"
        elif token.startswith("[") and token.endswith("]"):
            inner = _sequence(token[1:-1])
            pending += f"(?:{SEP}{inner})?" if out else f"(?:{inner}{SEP})?"
        elif out:
            out += pending + SEP + _token(token)
            pending = ""
        else:
            out = pending + _token(token)
            pending = ""
    if not out:
        raise PhraseError(f"phrase {phrase!r} has no required word")
    return out + pending


@functools.cache
def compile_phrase(phrase: str) -> re.Pattern[str]:
    """Compile one lexicon phrase; raises PhraseError naming the problem."""
    return re.compile(r"(?<!\w)" + _sequence(phrase.strip().lower()) + r"(?!\w)")


_IS = re.compile(r"(?<=[a-z])['’]s\b")
_APOSTROPHES = str.maketrans({"'": "", "’": "", "‘": "", "`": "", "´": ""})


def normalise(text: str) -> str:
    """Lower-case, strip accents and apostrophes, unify hyphens: "Can’t" -> "cant"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _IS.sub(" is", text.lower())  # "tongue's swelling" reads as "tongue is swelling"
    text = text.translate(_APOSTROPHES)
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)
    return re.sub(r"[ \t]+", " ", text)


def vocabulary(phrases: list[str]) -> tuple[set[str], set[str]]:
    """The literal words and the word stems (from `word*`) a set of phrases uses."""
    words: set[str] = set()
    stems: set[str] = set()
    for phrase in phrases:
        for raw in re.findall(r"[a-z0-9'-]+\*?", phrase.lower()):
            if raw.endswith("*"):
                stems.add(normalise(raw[:-1]))
            else:
                words.update(normalise(raw).split())
    return words, stems

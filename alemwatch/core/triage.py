"""Symptom triage from a patient's own words.

Reads text against the protocol's lexicon: every sign whose phrases match (and are not
negated) is suspected; the days since the last infusion pick a window's condition and
urgency; combinations of signs escalate; reported temperatures are read as numbers. The
result's urgency is always the highest of what matched: wording can add alarms, never hide
one (spelling slips are corrected towards the lexicon, negation reaches only a few words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from alemwatch.core.lexicon import compile_phrase, normalise, vocabulary
from alemwatch.protocol.model import URGENCY_RANK, Below, Protocol, Sign

CACHE_SIZE = 8192
RARE_WORD = 500  # English words seen less often than this may be typos ("hart" -> "heart")
DECIMAL = re.compile(r"(\d)[.,](\d)")  # 39.5 -> 39_5: one word, so phrases and sentences hold
CLAUSE_END = re.compile(r"[.,;:!?\n()]| - ")
AUXILIARIES = frozenset({"is", "are", "was", "were", "has", "have", "had", "do", "does", "did", "been"})
RENEWED = re.compile(
    r"\b(until|till|til|untill|at first|this one|this time|this is|(?:but |and )?now (?:i|im|ive|its|it|there|theyre|"
    r"covered|every|another|all|again|three|two|several|lots|loads|more|they|she|he|getting|got)|today (?:i|ive|had|"
    r"another|its|covered|again|loads|lots)|(?:covered|everywhere) today)\b"
)
EXCEPTION = re.compile(r"\b(except|apart from|other than|besides|but)\b")  # inside a mention: its turn
CONTRAST = re.compile(r"\b(its|it is|theyre|they are|thats|that is|instead|rather)\b")
AFTER_CLAUSE_END = re.compile(r"[.,;!?\n()]| - ")  # after a mention, "lumps: none found" stays one clause
SENTENCE_END = re.compile(r"[.;!?\n()]")
TEMPERATURE = re.compile(
    r"(?<![\d_])(\d{2,3}(?:_\d{1,2})?)\s*(?:°|º|deg(?:rees?)?)?\s*o?(c|f|celsius|fahrenheit)?(?:ish)?(?!\w|\.\d)"
)
# A reading with decimals and nothing else said about it ("38.4 this morning", "38.5 for 2
# days") is taken for a temperature, unless a unit of something else follows it ("38.5 kg",
# "38.5 hours") or a thing measured comes just before it ("weigh 38.5", "platelets 38.5").
MEASURE_UNIT = re.compile(
    r"\s*(?:%|(?:kgs?|kilos?|lbs?|pounds?|stones?|grams?|g|mg|mcg|ml|mls|litres?|liters?|mmol|umol|units?|percent|"
    r"hours?|hrs?|minutes?|mins?|days?|weeks?|months?|years?|yrs?|km|kms|miles?|metres?|meters?|cm|mm|inches)\b)"
)
MEASURED_BEFORE = re.compile(
    r"(?:[£$€]|\b(?:weigh\w*|weight|bmi|platelet\w*|counts?|tsh|t3|t4|hb|haemoglobin|hemoglobin|creatinine|egfr|"
    r"ferritin|bp|pressure|pulse|heart rate|bpm|sugars?|glucose|results?|levels?|doses?|price|cost|pay|paid)\W+"
    r"(?:\w+\W+){0,2})$"
)
PLATELETS = re.compile(r"\b(platelet\w*|plts?)\b")
# A quoted count: a number (not a time: "2 weeks ago") after the word, before the clause ends or
# something else measured is named ("platelets fine, temp 38").
COUNT = re.compile(
    r"(?<![\d_])(\d{1,6}(?:_\d{1,3})?)\s*(?:k|thousand)?(?![\d_])(?!\s*(?:st|nd|rd|th|x|times|am|pm|days?|weeks?|"
    r"months?|years?|yrs?|hours?|hrs?|minutes?|mins?|o clock|oclock)\b)"
)
_SMALL_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
_SMALL_NUMBERS += ["twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_COUNT_WORDS = {word: n for n, word in enumerate(_SMALL_NUMBERS)} | {word: 10 * n for n, word in enumerate(_TENS, 2)}
_COUNT_WORD = "|".join([*_COUNT_WORDS, "hundred"])
# A count in words ("nine", "twenty five", "a hundred and twenty"), read by `_count_in_digits`.
SPELLED_COUNT = re.compile(rf"\b(?:a (?=hundred))?(?:{_COUNT_WORD})(?:(?: and)? (?:{_COUNT_WORD}))*\b")
PLATELETS_SCAN_END = re.compile(
    r"[.;!?\n()]|\b(?:temp\w*|fever\w*|thermometer|degrees?|hb|haemoglobin|hemoglobin|tsh|t3|t4|creatinine|"
    r"egfr|ferritin|white\w*|wbc|neutrophil\w*|lymph\w*|cd4|weigh\w*|bp|pressure|pulse|heart rate|sugars?|glucose)\b"
)
# A heart rate the patient quotes: after the word, up to the end of the clause or the next thing
# measured ("pulse 120", "resting heart rate is 115", "hr 130 on my watch"), or a number before
# its unit ("130 bpm", "a hundred and twenty beats a minute").
HEART_RATE = re.compile(r"\b(?:(?:resting )?(?:heart ?rate|heart ?beat|pulse(?! ?ox\w*)|hr)|bpm)\b")
BEATS = re.compile(r"(?<![\d_])(\d{2,3})\s*(?:bpm|beats? (?:a|per|each) (?:minute|min)|beats?/min)\b")
HEART_RATE_SCAN_END = re.compile(
    r"[.;!?\n()%]|\b(?:temp\w*|fever\w*|thermometer|degrees?|platelet\w*|plts?|hb|haemoglobin|hemoglobin|tsh|t3|t4|"
    r"creatinine|egfr|ferritin|wbc|cd4|weigh\w*|bp|blood pressure|pressure|sugars?|glucose|sats?|oxygen|o2|spo2)\b"
)
OF_WORD = re.compile(r"\s+of\b")
_UNITS = "|".join(_SMALL_NUMBERS[1:10])
# Temperatures in words: "thirty nine", "thirty eight point five", "a hundred and two",
# "hundred and one point five"; and "39 point 5". Only the numbers a temperature can be.
SPELLED_TEMPERATURE = re.compile(
    rf"\b(?:(thirty|forty)(?: ({_UNITS}))?|(?:(?:a|one) )?hundred(?: and)?(?: ({_UNITS}|ten))?|(\d{{2,3}}))"
    rf"(?: point (zero|{_UNITS}|\d)| and a half)?\b"
)
TEMPERATURE_CONTEXT = re.compile(
    r"\b(temp\w*|fever\w*|febrile|thermometer|degrees?|running|celsius|fahrenheit|shiver\w*|chills|burning up|t)\b"
    r"|°|º|\U0001f321|\U0001f912"
)


@dataclass(frozen=True)
class Hit:
    sign: str
    condition: str
    urgency: str
    matched: str


@dataclass(frozen=True)
class Suspected:
    condition: str
    urgency: str
    matched: tuple[str, ...]
    signs: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "condition": self.condition,
            "urgency": self.urgency,
            "matched": list(self.matched),
            "signs": list(self.signs),
        }


@dataclass(frozen=True)
class TriageResult:
    urgency: str
    suspected: tuple[Suspected, ...]
    advice: str
    negated: tuple[str, ...] = ()
    days_since_infusion: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "urgency": self.urgency,
            "suspected": [s.to_json() for s in self.suspected],
            "advice": self.advice,
            "negated": list(self.negated),
            "days_since_infusion": self.days_since_infusion,
        }


def _words_regex(phrases: list[str]) -> re.Pattern[str]:
    ordered = sorted({normalise(p) for p in phrases}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in ordered) + r")(?!\w)")


class TriageEngine:
    """Compiled once per protocol; `assess` calls it for every reported symptom."""

    def __init__(self, protocol: Protocol) -> None:
        triage = protocol.triage
        self.protocol = protocol
        self.levels = triage.urgency_levels
        self.signs = {sign.id: sign for sign in triage.signs}
        self.patterns = [
            (sign, [(compile_phrase(p), frozenset(vocabulary([p])[0])) for p in sign.phrases]) for sign in triage.signs
        ]
        negation = triage.negation
        self.cues = _words_regex(negation.cues)
        self.gap_words = frozenset(normalise(w) for w in negation.red_flag_gap_words)
        # Signs that can be urgent or an emergency (at any days since the infusion): red flags.
        self.red_flags = {
            sign.id
            for sign in triage.signs
            if max(
                URGENCY_RANK[u]
                for u in [
                    sign.urgency,
                    *(w.urgency for w in sign.windows if w.urgency),
                    *([sign.days_unknown.urgency] if sign.days_unknown and sign.days_unknown.urgency else []),
                ]
            )
            >= URGENCY_RANK["urgent"]
        }
        self.fillers = _words_regex(triage.fillers) if triage.fillers else None
        self.respellings = {normalise(k): normalise(v) for k, v in triage.respellings.items()}
        self.respelled = _words_regex(list(self.respellings)) if self.respellings else None
        # A denial right after the mention, in its clause (only spaces, a colon or a dash between:
        # "fever free", "lumps: none found"), or one that is all the rest of its sentence, a
        # comma allowed ("neck pain, I have none"; not "numb on the left, none on the right").
        self.post = re.compile(r"^[\s:-]*" + _words_regex(negation.post).pattern) if negation.post else None
        self.post_at_end = (
            re.compile(r"^[\s:,-]*" + _words_regex(negation.post_at_end).pattern + r"[\s.!?]*$")
            if negation.post_at_end
            else None
        )
        # One pattern, longest phrases first (as `_words_regex`): "not sure if" before "not sure".
        pseudo = sorted(negation.pseudo, key=len, reverse=True)
        self.pseudo = re.compile("|".join(compile_phrase(p).pattern for p in pseudo)) if pseudo else None
        self.terminators = _words_regex(negation.terminators)
        self.list_gap = re.compile(r"^\W*(?:" + "|".join(map(re.escape, negation.list_words)) + r")\W+$")
        self.max_words = negation.max_words
        all_phrases = [p for sign in triage.signs for p in sign.phrases]
        # Slips are corrected towards the signs' words only, never towards a negation or joining
        # word ("hivs" is "hives", not "his"); no word of either is taken for a slip.
        self.sign_words, self.stems = vocabulary(all_phrases)
        other_words, other_stems = vocabulary(negation.cues + negation.terminators)
        self.words, self.stems = self.sign_words | other_words, self.stems | other_stems
        self.fever_c = protocol.parameter("fever_celsius")
        self.high_fever_c = protocol.parameter("urgent_fever_celsius")
        self.delayed_window = protocol.int_parameter("delayed_reaction_window_days")
        reported = triage.platelets
        rule = reported.below_rule if reported else None
        below = [f.value for f in protocol.findings if f.id == rule and isinstance(f, Below)]
        self.low_platelets = (reported.low_sign, below[0]) if reported and below else None
        rate = triage.heart_rate
        self.fast_heart = (rate.fast_sign, protocol.parameter(rate.at_least_parameter)) if rate else None
        self._cache: dict[tuple[str, int | None], TriageResult] = {}
        self.actions = {ae.condition: ae.action for ae in protocol.adverse_effects if ae.action}

    # --- text preparation -----------------------------------------------------------

    def warm(self) -> None:
        """Build the lazily made tables (the English word list, the spelling targets) now, so
        that the first report a server process triages is not the one that waits for them."""
        _ = (self._english, self._targets, self._anagrams)

    @cached_property
    def _english(self) -> dict[str, int]:
        from spellchecker import SpellChecker

        return dict(SpellChecker().word_frequency.dictionary)

    @cached_property
    def _targets(self) -> list[str]:
        return sorted(w for w in self.sign_words if len(w) >= 3 and w.isalpha())

    @cached_property
    def _anagrams(self) -> dict[str, str]:
        return {w[0] + "".join(sorted(w)): w for w in self._targets if len(w) >= 5}

    def correct_spelling(self, text: str) -> str:
        """Replace words that are neither common English nor in the lexicon by the lexicon
        word one slip away ("hedache" -> "headache", "brusing" -> "bruis*")."""
        from rapidfuzz.distance import DamerauLevenshtein
        from rapidfuzz.process import extract

        def fix(match: re.Match[str]) -> str:
            word = match.group(0)
            if len(word) < 4 or word in self.words:
                return word
            limit = 2 if len(word) >= 9 else 1
            close = extract(word, self._targets, scorer=DamerauLevenshtein.distance, score_cutoff=limit, limit=8)
            anagram = self._anagrams.get(word[0] + "".join(sorted(word)))
            stem = None if close or anagram else self._near_stem(word)
            if not (close or anagram or stem):
                return word
            # Only now is the English dictionary needed (loading it costs ~0.3 s once).
            if self._english.get(word, 0) >= RARE_WORD:
                return word
            if word in self._english and any(word.startswith(s) for s in self.stems):
                return word  # a real word the lexicon already reads ("slurred": slur*)
            if close:
                # Fewest edits first, then a word with the same first letter ("yelow" -> "yellow"),
                # then one no shorter (a slip drops a letter more often than it adds one: "hivs" is
                # "hives", not "his"), then the commoner word ("blod" -> "blood", not "bled").
                return str(
                    min(
                        close,
                        key=lambda c: (c[1], c[0][0] != word[0], len(c[0]) < len(word), -self._english.get(c[0], 0)),
                    )[0]
                )
            if anagram:
                return anagram  # letters swapped further apart: "tounge" -> "tongue"
            return stem or word

        return re.sub(r"[a-z]+", fix, text)

    def _near_stem(self, word: str) -> str | None:
        """`word` with its head replaced by a lexicon stem one slip away ("brusing" -> "bruising")."""
        from rapidfuzz.distance import DamerauLevenshtein

        if any(word.startswith(s) for s in self.stems):
            return None
        for stem in sorted(self.stems, key=lambda x: (-len(x), x)):
            if len(stem) >= 4 and DamerauLevenshtein.distance(word[: len(stem)], stem) <= 1:
                return stem + word[len(stem) :]
        return None

    def _masked(self, text: str) -> str:
        """The text with pseudo-negations blanked out (same length, so offsets hold)."""
        if self.pseudo is None:
            return text
        return self.pseudo.sub(lambda m: "x" * len(m.group(0)), text)

    def _negated(
        self,
        masked: str,
        start: int,
        end: int,
        literals: frozenset[str],
        mentions: list[tuple[int, int]],
        red_flag: bool = False,
    ) -> bool:
        """A cue shortly before the mention in its clause, inside it after its first word
        ("face isn't drooping"; the phrase's own words excepted, as in "lost weight without
        trying"), or a denial right after it in its clause ("fever free"). A cue before it
        reaches it through a list of other mentions ("no fever or rash"), not past a mention
        followed by anything else ("not itchy throat swelling": the throat is not denied)."""
        first_word_end = masked.find(" ", start, end)
        if first_word_end != -1:
            for cue in self.cues.finditer(masked, first_word_end, end):
                if set(cue.group(0).split()) - AUXILIARIES <= literals:  # "face is not symmetrical": the phrase's own
                    continue
                rest = masked[cue.end() : end]
                # "throat isnt sore, its swelling": the denial is of what comes before the turn.
                if not CLAUSE_END.search(rest) and not self.terminators.search(rest) and not CONTRAST.search(rest):
                    return True
        after = masked[end : end + 60]
        clause = AFTER_CLAUSE_END.split(after, maxsplit=1)[0]
        sentence = SENTENCE_END.split(after, maxsplit=1)[0]
        question = after[len(sentence) : len(sentence) + 1] == "?"  # "face drooping normal?" asks
        if not question and self.post is not None and self.post.search(clause):
            return True
        if not question and self.post_at_end is not None and self.post_at_end.search(sentence):
            return True
        if RENEWED.search(masked, start, end + len(sentence)):
            # "never had a nosebleed until yesterday", "I don't get headaches, this one came out
            # of nowhere": a denial of before or of the usual, about a symptom that is here now.
            return False
        if EXCEPTION.search(masked, start, end):
            # "not bleeding anywhere except my gums": the mention turns on the exception, which
            # is what it names; a cue before it denies what comes before the turn only.
            return False
        clause_start = 0
        for boundary in CLAUSE_END.finditer(masked, 0, start):
            clause_start = boundary.end()
        for stop in self.terminators.finditer(masked, clause_start, start):
            clause_start = stop.end()
        words = [w.start() for w in re.finditer(r"\S+", masked[clause_start:start])]
        reach = self.max_words + 2
        window_start = clause_start + words[-reach] if len(words) > reach else clause_start
        cues = list(self.cues.finditer(masked, window_start, start))
        if not cues:
            return False
        return self._reaches(masked, cues[-1].end(), start, mentions, red_flag)

    def _reaches(
        self, masked: str, cue_end: int, start: int, mentions: list[tuple[int, int]], red_flag: bool = False
    ) -> bool:
        """Whether a negation cue ending at `cue_end` reaches a mention at `start`: through
        the mentions between them only where each is followed by a list word ("or", "nor"); to
        a red flag only from right before it (`red_flag_gap_words` apart)."""
        between = sorted({(s, e) for s, e in mentions if s >= cue_end and e <= start})
        position = start
        for s, e in reversed(between):
            if e > position:  # overlaps the next one in the chain: part of the same words
                continue
            if not self.list_gap.match(masked[e:position]):
                return False
            position = s
        return not red_flag or set(masked[cue_end:position].split()) <= self.gap_words

    # --- matching -------------------------------------------------------------------

    def _resolve(self, sign: Sign, days: int | None) -> tuple[str, str] | None:
        if days is None:
            if sign.days_unknown is not None:
                return (
                    sign.days_unknown.condition or sign.condition,
                    sign.days_unknown.urgency or sign.urgency,
                )
            return None if sign.windows_only else (sign.condition, sign.urgency)
        for window in sign.windows:
            if window.contains(days):
                return window.condition or sign.condition, window.urgency or sign.urgency
        return None if sign.windows_only else (sign.condition, sign.urgency)

    def _temperature_signs(self, text: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        text = SPELLED_TEMPERATURE.sub(_in_digits, text)
        anywhere = TEMPERATURE_CONTEXT.search(text) is not None
        for sentence in re.split(r"[.!?;](?=\s|$)|\n", text):
            for match in TEMPERATURE.finditer(sentence):
                value = float(match.group(1).replace("_", "."))
                unit = (match.group(2) or "").lower()
                if unit == "f" and OF_WORD.match(sentence, match.end(1)):
                    unit = ""  # "40 of fever": the word "of", not 40 °F
                # A whole number needs its context in its own sentence ("I'm 39" is an age); a
                # reading with decimals ("39.8") anywhere in the message, or none at all when its
                # sentence does not say it measures something else ("38.4 this morning").
                decimals = "_" in match.group(1)
                has_context = (
                    unit
                    or TEMPERATURE_CONTEXT.search(sentence)
                    or (decimals and (anywhere or not self._measures_else(sentence, match.start(1), match.end(1))))
                )
                if not has_context:
                    continue
                celsius = (value - 32) * 5 / 9 if unit.startswith("f") or (not unit and value >= 90) else value
                if not 34 <= celsius <= 44:
                    continue
                celsius = round(celsius, 1)
                if celsius >= self.high_fever_c:
                    found.append((self.protocol.triage.temperature.high_fever_sign, match.group(0).strip()))
                elif celsius >= self.fever_c:
                    found.append((self.protocol.triage.temperature.fever_sign, match.group(0).strip()))
        return found

    @staticmethod
    def _measures_else(sentence: str, start: int, end: int) -> bool:
        """Whether the number at start:end measures something other than a temperature."""
        return bool(MEASURE_UNIT.match(sentence, end) or MEASURED_BEFORE.search(sentence[max(0, start - 40) : start]))

    def _platelet_signs(self, text: str) -> list[tuple[str, str]]:
        """Platelet counts the patient quotes, read up to the end of the clause after the word
        (or the next thing measured): in 10^9/L, or per microlitre ("85,000") read as such."""
        if self.low_platelets is None:
            return []
        sign, below = self.low_platelets
        found: list[tuple[str, str]] = []
        for mention in PLATELETS.finditer(text):
            rest = SPELLED_COUNT.sub(_count_in_digits, text[mention.end() : mention.end() + 80])
            stop = PLATELETS_SCAN_END.search(rest)
            for number in COUNT.finditer(rest[: stop.start()] if stop else rest):
                whole, _, part = number.group(1).partition("_")
                value = float(whole + part) if len(part) == 3 else float(f"{whole}.{part or 0}")
                if value >= 1000:  # per microlitre (85,000 = 85 x10^9/L)
                    value /= 1000
                if value < below:
                    found.append((sign, f"{mention.group(0)} {number.group(0).strip()}"))
        return found

    def _heart_rate_signs(self, text: str) -> list[tuple[str, str]]:
        """Heart rates the patient quotes, per minute, at or above the protocol's fast rate."""
        if self.fast_heart is None:
            return []
        sign, fast = self.fast_heart
        text = SPELLED_COUNT.sub(_count_in_digits, text)
        quoted = [(m.group(0), float(m.group(1))) for m in BEATS.finditer(text)]
        for mention in HEART_RATE.finditer(text):
            rest = text[mention.end() : mention.end() + 60]
            stop = HEART_RATE_SCAN_END.search(rest)
            for number in COUNT.finditer(rest[: stop.start()] if stop else rest):
                whole = number.group(1).partition("_")[0]
                quoted.append((f"{mention.group(0)} {number.group(0).strip()}", float(whole)))
        # (30-250: what a heart can beat; outside it the number is something else)
        return [(sign, said) for said, value in quoted if 30 <= value <= 250 and value >= fast]

    def prepare(self, text: str) -> str:
        """The text as the phrases read it: normalised, decimals kept whole, lay spellings and
        slips read as the words they stand for, hedging words taken out."""
        prepared = DECIMAL.sub(r"\1_\2", normalise(text))
        if self.respelled is not None:
            prepared = self.respelled.sub(lambda m: self.respellings[m.group(0)], prepared)
        if self.fillers is not None:
            prepared = re.sub(r" {2,}", " ", self.fillers.sub(" ", prepared))
        return self.correct_spelling(prepared)

    def hits(self, text: str, days: int | None) -> tuple[list[Hit], list[str]]:
        prepared = self.prepare(text)
        masked = self._masked(prepared)
        found = [
            (sign, literals, match)
            for sign, patterns in self.patterns
            for pattern, literals in patterns
            for match in pattern.finditer(prepared)
        ]
        mentions = [match.span() for _, _, match in found]
        hits: list[Hit] = []
        negated: list[str] = []
        for sign, literals, match in found:
            if self._negated(masked, match.start(), match.end(), literals, mentions, sign.id in self.red_flags):
                negated.append(match.group(0))
                continue
            resolved = self._resolve(sign, days)
            if resolved:
                hits.append(Hit(sign.id, resolved[0], resolved[1], match.group(0)))
        measured = (self._temperature_signs, self._platelet_signs, self._heart_rate_signs)
        for sign_id, matched in [found for reader in measured for found in reader(prepared)]:
            resolved = self._resolve(self.signs[sign_id], days)
            if resolved:
                hits.append(Hit(sign_id, resolved[0], resolved[1], matched))
        present = {hit.sign for hit in hits}
        for combo in self.protocol.triage.combinations:
            if combo.min_days is not None and days is not None and days < combo.min_days:
                continue
            if all(any(ref in present for ref in group) for group in combo.all_of):
                members = [hit.matched for hit in hits if any(hit.sign in group for group in combo.all_of)]
                hits.append(Hit(combo.id, combo.condition, combo.urgency, " + ".join(dict.fromkeys(members))))
        return hits, sorted(set(negated) - {hit.matched for hit in hits})

    def triage(self, text: str, days_since_infusion: int | None = None) -> TriageResult:
        """Triage one report. Results are cached: a sweep re-reads the same reports daily."""
        key = (text, days_since_infusion)
        result = self._cache.get(key)
        if result is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            result = self._cache[key] = self._triage(text, days_since_infusion)
        return result

    def _triage(self, text: str, days_since_infusion: int | None) -> TriageResult:
        hits, negated = self.hits(text, days_since_infusion)
        by_condition: dict[str, list[Hit]] = {}
        for hit in hits:
            by_condition.setdefault(hit.condition, []).append(hit)
        suspected = [
            Suspected(
                condition=condition,
                urgency=max((h.urgency for h in group), key=URGENCY_RANK.__getitem__),
                matched=tuple(dict.fromkeys(h.matched for h in group)),
                signs=tuple(dict.fromkeys(h.sign for h in group)),
            )
            for condition, group in by_condition.items()
        ]
        suspected.sort(key=lambda s: (-URGENCY_RANK[s.urgency], s.condition))
        urgency = suspected[0].urgency if suspected else "routine"
        return TriageResult(
            urgency, tuple(suspected), self.advice(urgency, suspected), tuple(negated), days_since_infusion
        )

    def advice(self, urgency: str, suspected: list[Suspected]) -> str:
        parts = [self.levels[urgency].advice]  # type: ignore[index]
        for item in suspected:
            if item.urgency == urgency and item.condition in self.actions:
                parts.append(self.actions[item.condition])
                break
        return " ".join(parts)


def _in_digits(match: re.Match[str]) -> str:
    """A temperature in words as digits ("thirty eight point five" -> "38_5", as DECIMAL writes
    a decimal point); digits before "point" ("39 point 5") joined the same way."""
    tens, unit, hundreds_unit, digits, decimal = match.groups()
    if digits is not None:
        if decimal is None and "half" not in match.group(0):
            return match.group(0)
        whole = int(digits)
    elif tens is not None:
        whole = (30 if tens == "thirty" else 40) + (_COUNT_WORDS[unit] if unit else 0)
    else:
        whole = 100 + (10 if hundreds_unit == "ten" else _COUNT_WORDS[hundreds_unit] if hundreds_unit else 0)
    if decimal is not None:
        return f"{whole}_{decimal if decimal.isdigit() else _COUNT_WORDS[decimal]}"
    if "half" in match.group(0):
        return f"{whole}_5"
    return str(whole)


def _count_in_digits(match: re.Match[str]) -> str:
    """A count in words as digits ("twenty five" -> "25", "a hundred and ten" -> "110"); "one"
    alone stays a word ("no one", "the one thing")."""
    words = [w for w in match.group(0).split() if w not in ("a", "and")]
    if words == ["one"] or words == ["zero"]:
        return match.group(0)
    value = 0
    for word in words:
        value = (value or 1) * 100 if word == "hundred" else value + _COUNT_WORDS[word]
    return str(value)

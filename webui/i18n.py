"""The pages' own words in their user's language: gettext catalogs (webui/translations) through Flask-Babel.

The language is, in this order: the switcher's ``?ui=`` value, the ``lang`` cookie it leaves, the best
match of the browser's Accept-Language, English. Queries are searched in whatever language they are
typed in; this only chooses the language of the page around them. The JSON API stays English.

The catalogs are made with Babel's tools (``make translations``: extract, update, compile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from babel import Locale

if TYPE_CHECKING:
    from flask import Flask, Response

COOKIE = "lang"
SWITCH_PARAM = "ui"
COOKIE_MAX_AGE = 365 * 24 * 3600
DEFAULT = "en"
# the 20 most spoken languages (first and second language speakers), then the other right-to-left
# scripts the page lays out: Persian and Hebrew
CODES = (
    "en",
    "zh_Hans",
    "hi",
    "es",
    "fr",
    "ar",
    "bn",
    "pt",
    "ru",
    "ur",
    "id",
    "de",
    "ja",
    "sw",
    "mr",
    "te",
    "tr",
    "ta",
    "vi",
    "ko",
    "fa",
    "he",
)
# the name of each language in its own script, as a menu of languages shows it
NATIVE_NAMES = {
    "en": "English",
    "zh_Hans": "简体中文",
    "hi": "हिन्दी",
    "es": "Español",
    "fr": "Français",
    "ar": "العربية",
    "bn": "বাংলা",
    "pt": "Português",
    "ru": "Русский",
    "ur": "اردو",
    "id": "Bahasa Indonesia",
    "de": "Deutsch",
    "ja": "日本語",
    "sw": "Kiswahili",
    "mr": "मराठी",
    "te": "తెలుగు",
    "tr": "Türkçe",
    "ta": "தமிழ்",
    "vi": "Tiếng Việt",
    "ko": "한국어",
    "fa": "فارسی",
    "he": "עברית",
}
# older or regional tags browsers still send, read as the catalog that serves them
ALIASES = {"iw": "he", "in": "id", "zh": "zh_Hans", "zh_cn": "zh_Hans", "zh_sg": "zh_Hans", "zh_hans": "zh_Hans"}


@dataclass(frozen=True)
class UILanguage:
    code: str  # the catalog's folder name (a Babel locale identifier)
    tag: str  # the BCP 47 tag for <html lang>
    name: str  # its own name
    dir: str  # "ltr" or "rtl"


def _language(code: str) -> UILanguage:
    # the direction comes from CLDR (through Babel), not from a list kept by hand
    direction = "rtl" if Locale.parse(code).character_order == "right-to-left" else "ltr"
    return UILanguage(code, code.replace("_", "-"), NATIVE_NAMES[code], direction)


LANGUAGES: dict[str, UILanguage] = {code: _language(code) for code in CODES}


def supported(value: str | None) -> str | None:
    """The catalog code for a language tag ("de", "pt-BR", "zh-Hans-CN", "ar_EG"), or None when the
    page has no catalog for it."""
    if not value:
        return None
    tag = value.strip().replace("-", "_")[:35]
    folded = {code.lower(): code for code in LANGUAGES}
    for candidate in (tag.lower(), "_".join(tag.lower().split("_")[:2]), tag.lower().split("_")[0]):
        code = folded.get(candidate) or ALIASES.get(candidate)
        if code:
            return code
    return None


def select_locale() -> str:
    """Flask-Babel's locale selector: the switcher's value, the cookie, Accept-Language, English."""
    from flask import request

    for value in (request.args.get(SWITCH_PARAM), request.cookies.get(COOKIE)):
        code = supported(value)
        if code:
            return code
    # werkzeug lists them by quality, best first ("*" is not a language)
    for value, _quality in request.accept_languages:
        code = supported(value)
        if code:
            return code
    return DEFAULT


def current() -> UILanguage:
    """The language of the page being rendered."""
    from flask_babel import get_locale

    locale = get_locale()
    return LANGUAGES.get(str(locale), LANGUAGES[DEFAULT])


def remember_choice(response: Response) -> Response:
    """A page asked for with ``?ui=xx`` keeps that language in the cookie; every page says that it
    depends on the cookie and Accept-Language, so that no cache serves one user's language to another."""
    from flask import request

    if response.mimetype == "text/html":
        code = supported(request.args.get(SWITCH_PARAM))
        if code and request.cookies.get(COOKIE) != code:
            response.set_cookie(COOKIE, code, max_age=COOKIE_MAX_AGE, samesite="Lax", httponly=True)
        response.vary.update(("Accept-Language", "Cookie"))
    return response


def page_context() -> dict[str, Any]:
    return {"ui_language": current(), "ui_languages": list(LANGUAGES.values())}


def init_app(app: Flask) -> None:
    """Register Flask-Babel (catalogs in webui/translations) and the language of each page."""
    from flask_babel import Babel

    Babel(app, locale_selector=select_locale)
    app.context_processor(page_context)
    app.after_request(remember_choice)

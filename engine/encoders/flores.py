"""ISO 639 language codes -> FLORES-200 codes, the language tokens of NLLB's text encoder.

NLLB reads its input as ``<language code> tokens </s>``; the code (``deu_Latn``, ``rus_Cyrl``, ...)
is a special token, so an NLLB-CLIP text tower needs to be told each query's language. The table
covers the 93 Babel-ImageNet languages (the evaluation set of ``babelsearch eval``) and the other
languages fastText's language-ID model (``engine.language``) can answer that FLORES-200 has.

Three Babel-ImageNet languages have no FLORES-200 code: Breton, Western Frisian and Latin. They get
the token of their nearest FLORES-200 relative (``APPROXIMATE``), a choice rather than a measured
optimum; anything else unknown gets ``DEFAULT`` (English), as NLLB's own tokenizer does.
"""

from __future__ import annotations

import re

__all__ = ["APPROXIMATE", "DEFAULT", "FLORES", "REVISION", "flores_code"]

DEFAULT = "eng_Latn"
# bump when the table changes: part of the text-vector cache key of language-token encoders
REVISION = "1"

FLORES = {
    # the 93 Babel-ImageNet languages
    "af": "afr_Latn",
    "am": "amh_Ethi",
    "ar": "arb_Arab",
    "as": "asm_Beng",
    "az": "azj_Latn",
    "be": "bel_Cyrl",
    "bg": "bul_Cyrl",
    "bn": "ben_Beng",
    "br": "cym_Latn",  # Breton: none in FLORES-200; Welsh, the nearest Brythonic relative
    "bs": "bos_Latn",
    "ca": "cat_Latn",
    "cs": "ces_Latn",
    "cy": "cym_Latn",
    "da": "dan_Latn",
    "de": "deu_Latn",
    "el": "ell_Grek",
    "en": "eng_Latn",
    "eo": "epo_Latn",
    "es": "spa_Latn",
    "et": "est_Latn",
    "eu": "eus_Latn",
    "fa": "pes_Arab",
    "fi": "fin_Latn",
    "fr": "fra_Latn",
    "fy": "nld_Latn",  # Western Frisian: none in FLORES-200; Dutch
    "ga": "gle_Latn",
    "gd": "gla_Latn",
    "gl": "glg_Latn",
    "gu": "guj_Gujr",
    "ha": "hau_Latn",
    "he": "heb_Hebr",
    "hi": "hin_Deva",
    "hr": "hrv_Latn",
    "hu": "hun_Latn",
    "hy": "hye_Armn",
    "id": "ind_Latn",
    "is": "isl_Latn",
    "it": "ita_Latn",
    "ja": "jpn_Jpan",
    "jv": "jav_Latn",
    "ka": "kat_Geor",
    "kk": "kaz_Cyrl",
    "km": "khm_Khmr",
    "kn": "kan_Knda",
    "ko": "kor_Hang",
    "ku": "kmr_Latn",
    "ky": "kir_Cyrl",
    "la": "ita_Latn",  # Latin: none in FLORES-200; Italian
    "lo": "lao_Laoo",
    "lt": "lit_Latn",
    "lv": "lvs_Latn",
    "mg": "plt_Latn",
    "mk": "mkd_Cyrl",
    "ml": "mal_Mlym",
    "mn": "khk_Cyrl",
    "mr": "mar_Deva",
    "ms": "zsm_Latn",
    "my": "mya_Mymr",
    "ne": "npi_Deva",
    "nl": "nld_Latn",
    "no": "nob_Latn",
    "om": "gaz_Latn",
    "or": "ory_Orya",
    "pa": "pan_Guru",
    "pl": "pol_Latn",
    "ps": "pbt_Arab",
    "pt": "por_Latn",
    "ro": "ron_Latn",
    "ru": "rus_Cyrl",
    "sa": "san_Deva",
    "sd": "snd_Arab",
    "si": "sin_Sinh",
    "sk": "slk_Latn",
    "sl": "slv_Latn",
    "so": "som_Latn",
    "sq": "als_Latn",
    "sr": "srp_Cyrl",
    "su": "sun_Latn",
    "sv": "swe_Latn",
    "sw": "swh_Latn",
    "ta": "tam_Taml",
    "te": "tel_Telu",
    "th": "tha_Thai",
    "tl": "tgl_Latn",
    "tr": "tur_Latn",
    "ug": "uig_Arab",
    "uk": "ukr_Cyrl",
    "ur": "urd_Arab",
    "uz": "uzn_Latn",
    "vi": "vie_Latn",
    "xh": "xho_Latn",
    "yi": "ydd_Hebr",
    "zh": "zho_Hans",
    # more languages fastText's lid.176 can answer, and common aliases
    "ak": "aka_Latn",
    "arz": "arz_Arab",
    "ast": "ast_Latn",
    "ay": "ayr_Latn",
    "azb": "azb_Arab",
    "ba": "bak_Cyrl",
    "bho": "bho_Deva",
    "bm": "bam_Latn",
    "bo": "bod_Tibt",
    "ceb": "ceb_Latn",
    "ckb": "ckb_Arab",
    "dz": "dzo_Tibt",
    "ee": "ewe_Latn",
    "fil": "tgl_Latn",
    "fj": "fij_Latn",
    "fo": "fao_Latn",
    "fur": "fur_Latn",
    "gn": "grn_Latn",
    "ht": "hat_Latn",
    "ig": "ibo_Latn",
    "ilo": "ilo_Latn",
    "in": "ind_Latn",
    "iw": "heb_Hebr",
    "ki": "kik_Latn",
    "ks": "kas_Arab",
    "lb": "ltz_Latn",
    "lg": "lug_Latn",
    "li": "lim_Latn",
    "lij": "lij_Latn",
    "lmo": "lmo_Latn",
    "ln": "lin_Latn",
    "mai": "mai_Deva",
    "mi": "mri_Latn",
    "min": "min_Latn",
    "mt": "mlt_Latn",
    "nb": "nob_Latn",
    "nn": "nno_Latn",
    "ny": "nya_Latn",
    "oc": "oci_Latn",
    "qu": "quy_Latn",
    "rn": "run_Latn",
    "rw": "kin_Latn",
    "sc": "srd_Latn",
    "scn": "scn_Latn",
    "sg": "sag_Latn",
    "sh": "hrv_Latn",
    "sm": "smo_Latn",
    "sn": "sna_Latn",
    "ss": "ssw_Latn",
    "st": "sot_Latn",
    "szl": "szl_Latn",
    "tg": "tgk_Cyrl",
    "ti": "tir_Ethi",
    "tk": "tuk_Latn",
    "tn": "tsn_Latn",
    "ts": "tso_Latn",
    "tt": "tat_Cyrl",
    "vec": "vec_Latn",
    "war": "war_Latn",
    "wo": "wol_Latn",
    "yo": "yor_Latn",
    "yue": "yue_Hant",
    "zu": "zul_Latn",
}

# the table's stand-ins for languages FLORES-200 lacks (see the module notes)
APPROXIMATE = frozenset({"br", "fy", "la"})

_TRADITIONAL = {"hant", "tw", "hk", "mo"}
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
# ISO 639-3 (the first half of a FLORES code) -> the FLORES code, for callers who give "deu" or "rus"
_BY_ISO3 = {code.split("_")[0]: code for code in FLORES.values()}


def flores_code(code: str | None) -> str | None:
    """The FLORES-200 code for an ISO 639 code (``de``, ``pt-BR``, ``zh-Hant``, ``deu``) or a FLORES code
    itself; None when the code is unknown (the caller then detects or falls back to ``DEFAULT``)."""
    if not code:
        return None
    code = code.strip()
    if _FLORES_CODE.match(code):
        return code
    parts = re.split(r"[-_]", code.lower())
    base = parts[0]
    if base in ("zh", "zho", "cmn") and _TRADITIONAL & set(parts[1:]):
        return "zho_Hant"
    return FLORES.get(base) or _BY_ISO3.get(base)

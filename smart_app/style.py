"""The EHR's look, from the launch's ``smart_style_url``, applied without loosening the pages'
Content-Security-Policy (SMART App Launch 2.2, "Styling": the app "SHOULD" use it, "MAY" ignore
any of it).

The style document is fetched on the server, once per launch, only from the EHR's own origins (its
FHIR base, authorization or token endpoint), over https unless development allows http, with no
token, no redirect followed and a size cap. Only values that match a strict grammar are kept (hex
colours, small lengths, font family names), and colours only where text stays readable: WCAG 2.1
AA contrast (4.5:1) against every background the page uses. What is kept becomes CSS custom
properties of a stylesheet the app serves itself (``/smart/app/<key>/style.css``), so
``style-src 'self'`` holds: no inline style, no CDN, no web font.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import requests

from fhir_mappings.outbound import Destinations, same_origin

log = logging.getLogger("ichis.smart")

STYLE_MAX_BYTES = 32 * 1024
#: Contrast every text colour keeps against every background (WCAG 2.1 AA, normal text).
MIN_CONTRAST = 4.5

_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_LENGTH = re.compile(r"(\d{1,2}(?:\.\d{1,3})?)(px|rem|em)")
# Family names and generic families: no ; { } ( ) / \ or < that could end the declaration.
_FONTS = re.compile(r"[A-Za-z0-9 ,'\"-]{1,200}")

#: The page's own colours (static/smart.css): what the EHR's colours are checked against.
TEXT, MUTED, ACCENT, ERROR = "#1f2328", "#57606a", "#0b57a4", "#a4161a"
#: Backgrounds of the page's panels, which keep their own colours: white (buttons' text, charts),
#: the warning and information panels, the notice.
PANELS = ("#ffffff", "#fff4d6", "#eef4fb", "#fdeeee")

#: SMART style property -> (the stylesheet's custom property, the lengths allowed per unit).
_LENGTHS = {
    "dim_font_size": ("--font-size", {"px": (12.0, 20.0), "rem": (0.75, 1.25), "em": (0.75, 1.25)}),
    "dim_border_radius": ("--radius", {"px": (0.0, 12.0), "rem": (0.0, 0.75), "em": (0.0, 0.75)}),
}
_FONT_PROPERTIES = {"font_family_body": "--font-body", "font_family_heading": "--font-heading"}


def _luminance(colour: str) -> float:
    """WCAG 2.1 relative luminance of a ``#rgb`` or ``#rrggbb`` colour."""
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2.1 contrast ratio of two colours, from 1 to 21."""
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _readable(colour: str, backgrounds: Iterable[str]) -> bool:
    return all(contrast(colour, background) >= MIN_CONTRAST for background in backgrounds)


def _colour(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value.lower() if isinstance(value, str) and _COLOUR.fullmatch(value) else None


def _length(value: Any, allowed: Mapping[str, tuple[float, float]]) -> str | None:
    match = _LENGTH.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    low, high = allowed[match.group(2)]
    return value if low <= float(match.group(1)) <= high else None


def _fonts(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    # A declaration's own ";" left at the end (the public SMART launcher sends one) is harmless.
    fonts = value.strip().removesuffix(";").strip()
    if not _FONTS.fullmatch(fonts):
        return None
    # An unclosed quote would turn the rest of the stylesheet into a string.
    if fonts.count("'") % 2 or fonts.count('"') % 2:
        return None
    return fonts


def parse_style(document: Any) -> dict[str, str]:
    """The usable values of a SMART style document, by the stylesheet's custom property name."""
    if not isinstance(document, Mapping):
        return {}
    kept: dict[str, str] = {}
    background = _colour(document, "color_background")
    text = _colour(document, "color_text")
    # Background and text go together: either both keep every text readable, or neither is used.
    page = background or PANELS[0]
    if _readable(text or TEXT, (page, *PANELS)) and _readable(page, (text or TEXT, MUTED)):
        if background:
            kept["--bg"] = background
        if text:
            kept["--text"] = text
    page = kept.get("--bg", PANELS[0])
    for name, variable, default in (("color_highlight", "--accent", ACCENT), ("color_error", "--red", ERROR)):
        colour = _colour(document, name)
        if colour and _readable(colour, (page, *PANELS)):
            kept[variable] = colour
        elif "--bg" in kept and not _readable(default, (page,)):
            # The app's own colour would not be readable on the EHR's background: keep neither.
            kept.pop("--bg")
            page = PANELS[0]
    for name, (variable, allowed) in _LENGTHS.items():
        if (length := _length(document.get(name), allowed)) is not None:
            kept[variable] = length
    for name, variable in _FONT_PROPERTIES.items():
        if (fonts := _fonts(document.get(name))) is not None:
            kept[variable] = fonts
    return kept


def style_url_allowed(url: str, ehr_urls: Iterable[str], *, allow_http: bool) -> bool:
    """Whether the style may be fetched: the project's outbound policy (https unless allowed, no
    credentials or unusual characters in the URL), and on one of the EHR's own origins."""
    policy = Destinations("the EHR's smart_style_url", allow_http=allow_http)
    return policy.allows(url) and any(same_origin(url, ehr) for ehr in ehr_urls)


def fetch_style(
    url: str | None,
    ehr_urls: Iterable[str],
    *,
    session: requests.Session,
    timeout: float,
    allow_http: bool,
) -> dict[str, str]:
    """The EHR's style for a launch, or nothing (and a log line saying why) when it is not usable."""
    if not url:
        return {}
    if not style_url_allowed(url, ehr_urls, allow_http=allow_http):
        log.info("smart style not applied", extra={"reason": "not-the-ehr"})
        return {}
    try:
        # No Authorization header: the style is public (SMART 2.2), and a token goes only to FHIR.
        with session.get(
            url, headers={"Accept": "application/json"}, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            body = response.raw.read(STYLE_MAX_BYTES + 1, decode_content=True)
            status = response.status_code
    except (requests.RequestException, OSError) as error:
        log.info("smart style not applied", extra={"reason": type(error).__name__})
        return {}
    if status != 200 or len(body) > STYLE_MAX_BYTES:
        log.info("smart style not applied", extra={"reason": f"http-{status}-{len(body)}-bytes"})
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        log.info("smart style not applied", extra={"reason": "not-json"})
        return {}
    return parse_style(document)

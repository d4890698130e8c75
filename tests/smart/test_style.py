"""The EHR's ``smart_style_url``: fetched on the server from the EHR's own origin, every value checked,
served as the app's own stylesheet so the Content-Security-Policy stays as strict as it was."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask, Response, redirect

from sandbox.ehr.pages import SMART_STYLE
from smart_app.style import contrast, fetch_style, parse_style, style_url_allowed
from tests.sandbox.standin import Served
from tests.smart.conftest import SmartEnv, app_context

#: What the sandbox EHR's style (sandbox/ehr/pages.py) becomes: all of it passes the checks.
SANDBOX_STYLE = {
    "--bg": "#f7f7f4",
    "--text": "#1f2328",
    "--accent": "#1d5fa8",
    "--red": "#9e2d2d",
    "--font-size": "15px",
    "--radius": "4px",
    "--font-body": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "--font-heading": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
}


def test_the_sandbox_ehrs_style_is_kept_whole() -> None:
    """Readable colours, sensible sizes and plain font names pass unchanged."""
    assert parse_style(SMART_STYLE) == SANDBOX_STYLE


def test_the_public_smart_launchers_style_is_kept_but_for_its_pale_highlight() -> None:
    """smart-launcher-v2's /smart-style.json (as served when the app was launched from it): its
    light blue highlight fails AA as link text; its heading font's stray ";" is dropped."""
    launcher = {
        "color_background": "#edeae3",
        "color_error": "#9e2d2d",
        "color_highlight": "#69b5ce",
        "color_modal_backdrop": "",
        "color_success": "#498e49",
        "color_text": "#303030",
        "dim_border_radius": "6px",
        "dim_font_size": "13px",
        "dim_spacing_size": "20px",
        "font_family_body": "Georgia, Times, 'Times New Roman', serif",
        "font_family_heading": "'HelveticaNeue-Light', Helvetica, Arial, 'Lucida Grande', sans-serif;",
    }
    assert parse_style(launcher) == {
        "--bg": "#edeae3",
        "--text": "#303030",
        "--red": "#9e2d2d",
        "--font-size": "13px",
        "--radius": "6px",
        "--font-body": "Georgia, Times, 'Times New Roman', serif",
        "--font-heading": "'HelveticaNeue-Light', Helvetica, Arial, 'Lucida Grande', sans-serif",
    }


@pytest.mark.parametrize(
    ("document", "kept"),
    [
        ({"color_text": "red;}body{display:none"}, {}),
        ({"color_highlight": "url(https://evil.example/x)"}, {}),
        ({"color_background": "#00000066"}, {}),  # alpha: readability cannot be judged
        ({"font_family_body": "Arial; background: url(x)"}, {}),
        ({"font_family_body": "'Segoe UI, Arial"}, {}),  # an unclosed quote
        ({"font_family_body": "</style><script>"}, {}),
        (
            {"font_family_heading": "'HelveticaNeue-Light', Helvetica, Arial, 'Lucida Grande', sans-serif;"},
            {"--font-heading": "'HelveticaNeue-Light', Helvetica, Arial, 'Lucida Grande', sans-serif"},
        ),
        ({"font_family_body": "Arial;;"}, {}),
        ({"dim_font_size": "40px"}, {}),
        ({"dim_font_size": "1.1rem"}, {"--font-size": "1.1rem"}),
        ({"dim_border_radius": "calc(100% - 1px)"}, {}),
        ({"color_text": "#777777"}, {}),  # 4.48:1 on white: below AA
        ({"color_text": "#EEEEEE", "color_background": "#1E1E1E"}, {}),  # a dark theme: the panels stay light
        ({"color_highlight": "#ffcc00"}, {}),  # unreadable as link text on white
        ({"color_background": "#d0d0d0"}, {}),  # the muted text would fall below AA on it
        (
            {"color_background": "#fafafa", "color_highlight": "#1d5fa8"},
            {"--bg": "#fafafa", "--accent": "#1d5fa8"},
        ),
        ("not a style document", {}),
    ],
)
def test_each_value_is_kept_only_when_it_is_safe_css_and_stays_readable(
    document: Any, kept: dict[str, str]
) -> None:
    """Anything that could end a declaration, load something, or make text unreadable is dropped."""
    assert parse_style(document) == kept


def test_contrast_is_wcags_ratio() -> None:
    """Black on white is 21:1; the app's own text colour on white is 15.8:1 (as smart.css says)."""
    assert round(contrast("#000", "#ffffff"), 1) == 21.0
    assert round(contrast("#1f2328", "#fff"), 1) == 15.8


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example/smart-style.json", True),
        ("https://ehr.example:443/styles/a.json", True),
        ("https://cdn.example/smart-style.json", False),
        ("http://ehr.example/smart-style.json", False),  # plain http without the development switch
        ("https://cdn.example\\@ehr.example/smart-style.json", False),
        ("https://user:pw@ehr.example/smart-style.json", False),
        ("javascript:alert(1)", False),
    ],
)
def test_the_style_is_fetched_only_from_the_ehrs_own_origin_over_https(url: str, allowed: bool) -> None:
    """The origins of the EHR's FHIR base and OAuth endpoints, as requests would really connect."""
    ehr = ("https://ehr.example/fhir", "https://ehr.example/auth/authorize")
    assert style_url_allowed(url, ehr, allow_http=False) is allowed


@pytest.fixture
def style_server() -> Iterator[str]:
    """A real HTTP server answering as a misbehaving EHR might."""
    app = Flask("style-server")

    @app.get("/good.json")
    def good() -> Response:
        return Response(json.dumps({"color_highlight": "#1d5fa8"}), mimetype="application/json")

    @app.get("/huge.json")
    def huge() -> Response:
        return Response(json.dumps({"font_family_body": "a" * 40_000}), mimetype="application/json")

    @app.get("/elsewhere.json")
    def elsewhere() -> Any:
        return redirect("https://cdn.example/smart-style.json")

    @app.get("/broken.json")
    def broken() -> Response:
        return Response("{not json", mimetype="application/json")

    served = Served().mount(app)
    yield served.url
    served.stop()


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("/good.json", {"--accent": "#1d5fa8"}),
        ("/huge.json", {}),
        ("/elsewhere.json", {}),  # a redirect is never followed
        ("/broken.json", {}),
        ("/missing.json", {}),
    ],
)
def test_a_style_that_cannot_be_used_is_left_out_and_the_launch_goes_on(
    style_server: str, path: str, kept: dict[str, str]
) -> None:
    """Too big, redirected, not JSON or not there: no style, and no error for the clinician."""
    with requests.Session() as session:
        style = fetch_style(
            f"{style_server}{path}", (style_server,), session=session, timeout=5, allow_http=True
        )
    assert style == kept


def test_the_page_links_the_ehrs_style_as_its_own_stylesheet_and_keeps_its_policy(
    smart_env: Callable[..., SmartEnv],
) -> None:
    """The page links /smart/app/<key>/style.css, which sets the checked values; the CSP still
    allows styles from the app's own origin only, and no element carries a style attribute."""
    env = smart_env()
    env.fhir.add_patient("ichis-demo-2")
    page = env.open("ichis-demo-2", appContext=app_context("ichis-demo-2"))
    stylesheet = f"{page.request.path}/style.css"
    assert f'<link rel="stylesheet" href="{stylesheet}" data-testid="ehr-style">' in page.text
    assert "style=" not in page.text
    assert "style-src 'self';" in page.headers["Content-Security-Policy"]
    css = env.client.get(stylesheet)
    assert css.mimetype == "text/css"
    for name, value in SANDBOX_STYLE.items():
        assert f"  {name}: {value};" in css.text
    assert env.app.test_client().get(stylesheet).status_code == 404  # another browser: no launch

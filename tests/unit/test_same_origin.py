"""The token follows a link only to the server it was given for: the origin is the one a request
to that link would really reach, as urllib3 reads it, not as the link's text seems to say."""

from __future__ import annotations

import pytest

from fhir_mappings.client import request_origin, same_origin

BASE = "https://ehr.example.org/fhir"


@pytest.mark.parametrize(
    "link",
    [
        "https://ehr.example.org/fhir/Observation?page=2",
        "https://EHR.example.org:443/fhir?_getpages=abc",
        "https://ehr.example.org/other/path",
        # Queries the service builds from site codes may hold spaces, '|' and FHIR's '\,' escapes.
        "https://ehr.example.org/fhir/Observation?patient=1&code=urn:oid:1.2.3|WBC COUNT",
        "https://ehr.example.org/fhir/Observation?code=urn:x|a\\,b",
        "https://ehr.example.org/fhir?_getpages=abc&_getpagesoffset=20&_count=20",
    ],
)
def test_links_on_the_same_server_may_get_the_token(link: str) -> None:
    assert same_origin(link, BASE)


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example.net\\@ehr.example.org/fhir?page=2",  # urlsplit: ehr; urllib3: evil
        "https://user:secret@ehr.example.org/fhir?page=2",
        "https://ehr.example.org\t.evil.example.net/fhir",
        "http://ehr.example.org/fhir?page=2",
        "https://ehr.example.org:8443/fhir?page=2",
        "https://evil.example.net/fhir?page=2",
        "not a url",
    ],
)
def test_links_that_only_look_like_the_server_get_no_token(link: str) -> None:
    assert not same_origin(link, BASE)


def test_the_origin_is_where_the_request_goes() -> None:
    assert request_origin("https://evil.example.net\\@ehr.example.org/") is None
    assert request_origin("http://127.0.0.1:8090/fhir/$export-poll-status?_jobId=1") == (
        "http",
        "127.0.0.1",
        8090,
    )


def test_a_page_whose_entry_is_not_an_array_is_malformed_not_empty() -> None:
    """A second page {"entry": {}} must not read as "no more results" (a card would miss them).

    The server is a requests adapter in-process: a FHIR server that sends this cannot be run here.
    """
    import json
    import time

    import requests

    from fhir_mappings.client import FhirClient, FhirUnreachable

    class Page(requests.adapters.BaseAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
            response = requests.Response()
            response.status_code = 200
            response.headers["Content-Type"] = "application/fhir+json"
            response._content = json.dumps(
                {"resourceType": "Bundle", "type": "searchset", "entry": {}}
            ).encode()
            response.url = str(request.url)
            return response

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("https://ehr.example.org", Page())
    client = FhirClient(BASE, None, session, deadline=time.monotonic() + 5)
    first = {"resourceType": "Bundle", "entry": [], "link": [{"relation": "next", "url": f"{BASE}?page=2"}]}
    with pytest.raises(FhirUnreachable, match="not an array"):
        client.follow_pages(first)

"""The public listener over the Connect protocol with Python `requests` and
plain JSON, no generated code: what a website backend in Python would do.

Signs in, reads the profile (POST and GET), pages through the licenses, and
reads a failed call's error details from their `debug` form. Prints one
`ok ...` line per step and `ALL OK` at the end; exits non-zero on the first
failure. Driven by tests/process/outside_clients.rs.
"""

import argparse
import json
import sys
import urllib.parse

import requests

SERVICE = "licensing.v1.UserService"
HEADERS = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def call(session, base, method, body, token=None, timeout_ms=None):
    headers = dict(HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if timeout_ms:
        headers["Connect-Timeout-Ms"] = str(timeout_ms)
    return session.post(
        f"{base}/{SERVICE}/{method}", data=json.dumps(body), headers=headers, timeout=10
    )


def ok(response, what):
    if response.status_code != 200:
        fail(f"{what}: HTTP {response.status_code}: {response.text}")
    if response.headers.get("Cache-Control") != "private, no-store":
        fail(f"{what}: Cache-Control {response.headers.get('Cache-Control')!r}")
    return response.json()


def detail(error, type_name):
    for entry in error.get("details", []):
        if entry.get("type") == type_name:
            return entry.get("debug") or {}
    fail(f"no {type_name} in {error}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--public", required=True, help="host:port")
    parser.add_argument("--email", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--licenses", required=True, help="comma-separated ids")
    parser.add_argument("--other-license", required=True)
    args = parser.parse_args()
    base = f"http://{args.public}"
    session = requests.Session()

    signed_in = ok(
        call(session, base, "Login", {"email": args.email, "password": args.password}),
        "login",
    )
    token = signed_in["session"]["accessToken"]
    if not signed_in["session"].get("refreshToken"):
        fail(f"no refresh token: {signed_in}")
    print("ok login", flush=True)

    profile = ok(call(session, base, "GetProfile", {}, token, timeout_ms=5000), "profile")
    if profile["profile"]["email"] != args.email:
        fail(f"profile: {profile}")
    query = urllib.parse.urlencode({"connect": "v1", "encoding": "json", "message": "{}"})
    got = ok(
        session.get(
            f"{base}/{SERVICE}/GetProfile?{query}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ),
        "GET profile",
    )
    if got != profile:
        fail(f"GET and POST profiles differ: {got} {profile}")
    print(f"ok profile {profile['profile']['email']} (POST and GET)", flush=True)

    ids, page_token, pages = [], "", 0
    while True:
        pages += 1
        if pages > 10:
            fail("paging does not end")
        page = ok(
            call(session, base, "ListMyLicenses", {"pageSize": 1, "pageToken": page_token}, token),
            "list",
        )
        ids += [license["id"] for license in page.get("licenses", [])]
        page_token = page.get("nextPageToken", "")
        if not page_token:
            break
    if sorted(ids) != sorted(args.licenses.split(",")):
        fail(f"licenses {ids}")
    print(f"ok licenses {len(ids)} in {pages} pages", flush=True)

    # Errors: the HTTP status says the class, the body the details.
    wrong = call(session, base, "Login", {"email": args.email, "password": "not-the-password"})
    error = wrong.json()
    if wrong.status_code != 401 or error.get("code") != "unauthenticated":
        fail(f"wrong password: HTTP {wrong.status_code} {error}")
    info = detail(error, "google.rpc.ErrorInfo")
    if info.get("reason") != "INVALID_CREDENTIALS" or info.get("domain") != "licensing-gateway":
        fail(f"wrong password: {info}")
    print(f"ok wrong password 401 {info['reason']}", flush=True)

    invalid = call(session, base, "Login", {"email": "not-an-email", "password": "x"})
    error = invalid.json()
    if invalid.status_code != 400 or error.get("code") != "invalid_argument":
        fail(f"invalid login: HTTP {invalid.status_code} {error}")
    fields = {v["field"] for v in detail(error, "google.rpc.BadRequest").get("fieldViolations", [])}
    if "email" not in fields:
        fail(f"invalid login violations: {error}")
    print(f"ok invalid argument 400 fields {','.join(sorted(fields))}", flush=True)

    foreign = call(session, base, "GetLicense", {"licenseId": args.other_license}, token)
    error = foreign.json()
    if foreign.status_code != 404 or detail(error, "google.rpc.ErrorInfo").get("reason") != "NOT_FOUND":
        fail(f"another user's license: HTTP {foreign.status_code} {error}")
    print("ok another user's license 404 NOT_FOUND", flush=True)

    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()

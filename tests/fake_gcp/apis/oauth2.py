"""The OAuth 2.0 token endpoint, for the credentials check of preflight: a test points google-auth's token
endpoint at `$FAKE/oauth2/token`. It answers what Google answers for a refresh token that
has expired or was revoked: 400 `invalid_grant` (https://developers.google.com/identity/protocols/oauth2#expiration).

Option: `fake.state["refresh_token_valid"]` (default False) gives an access token instead.
"""

from __future__ import annotations

from tests.fake_gcp.server import FakeGoogle, Request


def register(fake: FakeGoogle) -> None:
    @fake.route("oauth2", "POST", "/token", mutating=False)
    def token(req: Request):
        if fake.state.get("refresh_token_valid", False):
            return {"access_token": "fake-access-token", "expires_in": 3599, "token_type": "Bearer"}
        return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}

"""Flask's signed-cookie sessions, without building the cookie signer for a request that carries no session cookie.

MLflow's basic-auth app sets the Flask secret key (for its sign-up page's CSRF token), so Flask opens a session on
every request, and its `SecureCookieSessionInterface.open_session` first builds an itsdangerous signer (a serializer,
its key list, a JSON round-trip to test the serializer): in a profile, about a fifth of what the login added to a
`log_metric` call (issue 19: throughput). The mlflow client never sends a session cookie. For such a request this
interface returns what Flask's would, a new empty session, without the signer; a request with the cookie gets Flask's
own code.
`check_equivalence` (run at image build time by check_mlflow_compat.py) checks both answers against Flask's.
"""

from __future__ import annotations

from flask.sessions import SecureCookieSessionInterface


class SignerOnlyWithCookie(SecureCookieSessionInterface):
    def open_session(self, app, request):
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def install(flask_app) -> bool:
    """Use SignerOnlyWithCookie when the app has Flask's own cookie sessions (else leave the app as it is)."""
    if type(flask_app.session_interface) is not SecureCookieSessionInterface:
        return False
    flask_app.session_interface = SignerOnlyWithCookie()
    return True


def check_equivalence() -> str:
    """Flask's interface and this one open the same session, with and without a session cookie."""
    from flask import Flask, session

    app = Flask("check")
    app.secret_key = "check-only"
    with app.test_request_context("/"):
        session["user"] = "x"
        cookie = SecureCookieSessionInterface().get_signing_serializer(app).dumps(dict(session))
    name = app.config["SESSION_COOKIE_NAME"]
    for headers in ({}, {"Cookie": f"{name}={cookie}"}, {"Cookie": f"{name}=forged"}, {"Cookie": "other=1"}):
        with app.test_request_context("/", headers=headers) as context:
            flask_session = SecureCookieSessionInterface().open_session(app, context.request)
            ours = SignerOnlyWithCookie().open_session(app, context.request)
            if type(ours) is not type(flask_session) or dict(ours) != dict(flask_session) or ours.modified:
                raise AssertionError(f"the session opened with {headers or 'no cookie'} differs from Flask's")
    return "same sessions as Flask's, with and without a cookie"

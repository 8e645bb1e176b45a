"""The customer-portal calls of licensing-gateway, from the stock Python grpcio packages.

No generated code: every message class comes from the gateway's server reflection, as a
team writing a Python backend without our .proto files would do. Error details are read
with grpcio-status (`google.rpc.Status` with `ErrorInfo`), so each refusal is checked by
its stable reason, not its text.

Prints one `ok ...` line per check and exits non-zero on the first failure:
  * a new user (SignUp) edits their profile (UpdateProfile with an update mask), changes
    their password, enrols in two-factor authentication with a TOTP code computed here
    as an authenticator app would (RFC 6238), signs in with a code and with a recovery
    code (which then stops working), and turns two-factor authentication off;
  * password reset: the same empty answer for a known and an unknown email; with --internal,
    the website mailer's identity mints a reset token over mutual TLS (the payment service's
    identity may not), and ResetPassword with it lets the user sign in with the new password;
  * the demo user reads a license in detail, lists its machines and releases, cannot see or
    deactivate another user's, is refused at the deactivation limit, and frees a machine.

Usage: python portal.py --public 127.0.0.1:50051 --license ID --other-license ID
           --activation ID --limited-activation ID --other-activation ID
           [--internal 127.0.0.1:50052 --pki-dir sandbox-data]
"""

import argparse
import base64
import hashlib
import hmac
import pathlib
import struct
import sys
import time
import urllib.parse
import uuid

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

TIMEOUT = 10.0
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def totp(secret_base32, at=None):
    """RFC 6238: HMAC-SHA-1 over the 30-second step, dynamic truncation, 6 digits."""
    padded = secret_base32.upper() + "=" * (-len(secret_base32) % 8)
    key = base64.b32decode(padded)
    step = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def reason_of(error):
    """The ErrorInfo reason of a failed call (every gateway error carries one)."""
    status = rpc_status.from_call(error)
    if status is None:
        fail(f"no rich error details on {error.code()} {error.details()}")
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    fail(f"no ErrorInfo on {error.code()} {error.details()}")


def retry_delay(error):
    """The RetryInfo delay of a failed call, in seconds, or None."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class Service:
    """Dynamic stubs for one service, built from reflection."""

    def __init__(self, channel, name, metadata=()):
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        self.channel = channel
        self.name = name
        self.service = pool.FindServiceByName(name)
        self.metadata = list(metadata)

    def with_token(self, token):
        clone = object.__new__(Service)
        clone.__dict__.update(self.__dict__)
        clone.metadata = [("authorization", f"Bearer {token}")]
        return clone

    def call(self, method_name, **fields):
        method = self.service.FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        stub = self.channel.unary_unary(
            f"/{self.name}/{method_name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        # The gateway keeps every caller inside Cryptlex's rate limit (50 calls per 5 s for
        # the whole service) and says when to come back; a good client waits that long. Only
        # refusals that reached no upstream write are retried.
        for attempt in range(8):
            try:
                return stub(request_class(**fields), timeout=TIMEOUT, metadata=self.metadata)
            except grpc.RpcError as error:
                delay = retry_delay(error)
                if error.code() != grpc.StatusCode.UNAVAILABLE or delay is None or attempt == 7:
                    raise
                if reason_of(error) not in ("UPSTREAM_BUDGET_EXHAUSTED", "UPSTREAM_RATE_LIMITED"):
                    raise
                time.sleep(delay)

    def refused(self, expected_code, expected_reason, method_name, **fields):
        try:
            response = self.call(method_name, **fields)
        except grpc.RpcError as error:
            reason = reason_of(error)
            if error.code() != expected_code or reason != expected_reason:
                fail(f"{method_name}: {error.code().name} {reason}, wanted {expected_code.name} {expected_reason}")
            return reason
        fail(f"{method_name} answered {response} instead of {expected_code.name} {expected_reason}")


def account_flows(users, internal_address, pki_dir):
    email = f"py-portal-{uuid.uuid4().hex[:12]}@example.com"
    password = "first-password-1"
    signed_up = users.call("SignUp", email=email, password=password, first_name="Ada")
    me = users.with_token(signed_up.session.access_token)
    print(f"ok sign-up {signed_up.user_id}", flush=True)

    updated = me.call(
        "UpdateProfile",
        profile={"first_name": "Ada", "last_name": "Lovelace"},
        update_mask={"paths": ["last_name"]},
    )
    if updated.profile.last_name != "Lovelace":
        fail(f"UpdateProfile: {updated.profile}")
    if me.call("GetProfile").profile.last_name != "Lovelace":
        fail("GetProfile does not show the new last name")
    me.refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "UpdateProfile",
        profile={"email": "someone-else@example.com"},
        update_mask={"paths": ["email"]},
    )
    print("ok update-profile last_name (email refused)", flush=True)

    me.refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "WRONG_CURRENT_PASSWORD",
        "ChangePassword",
        current_password="not-the-password",
        new_password="second-password-2",
    )
    me.call("ChangePassword", current_password=password, new_password="second-password-2")
    password = "second-password-2"
    users.call("Login", email=email, password=password)
    print("ok change-password", flush=True)

    started = me.call("StartTwoFactorEnrollment")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(started.otpauth_url).query)
    if not started.otpauth_url.startswith("otpauth://totp/") or query.get("secret") != [started.secret]:
        fail("StartTwoFactorEnrollment: the URL does not carry the secret")
    wrong = "000000" if totp(started.secret) != "000000" else "111111"
    me.refused(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TWO_FACTOR_CODE", "EnableTwoFactor", code=wrong)
    enabled = me.call("EnableTwoFactor", code=totp(started.secret))
    if not enabled.profile.two_factor_enabled:
        fail("EnableTwoFactor: the profile says two-factor is off")
    codes = list(me.call("CreateRecoveryCodes", code=totp(started.secret)).recovery_codes)
    if len(codes) < 5:
        fail(f"CreateRecoveryCodes: {len(codes)} codes")
    print(f"ok two-factor enabled with {len(codes)} recovery codes", flush=True)

    users.refused(grpc.StatusCode.UNAUTHENTICATED, "TWO_FACTOR_REQUIRED", "Login", email=email, password=password)
    session = users.call("Login", email=email, password=password, two_factor_code=totp(started.secret)).session
    users.call("Login", email=email, password=password, two_factor_recovery_code=codes[0])
    users.refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_TWO_FACTOR_CODE",
        "Login",
        email=email,
        password=password,
        two_factor_recovery_code=codes[0],
    )
    print("ok login two-factor: required, code, recovery code once", flush=True)

    me = users.with_token(session.access_token)
    disabled = me.call("DisableTwoFactor", code=totp(started.secret))
    if disabled.profile.two_factor_enabled:
        fail("DisableTwoFactor: still on")
    users.call("Login", email=email, password=password)
    print("ok two-factor disabled", flush=True)

    known = users.call("RequestPasswordReset", email=email)
    unknown = users.call("RequestPasswordReset", email=f"nobody-{uuid.uuid4().hex[:8]}@example.com")
    if known.SerializeToString() != unknown.SerializeToString():
        fail("RequestPasswordReset answers differ for known and unknown emails")
    print("ok request-password-reset same answer for known and unknown", flush=True)

    if internal_address:
        with mtls_channel(internal_address, pki_dir, "payment-service") as channel:
            try:
                channel.unary_unary("/licensing.v1.AccountService/CreatePasswordResetToken")(
                    b"", timeout=TIMEOUT
                )
                fail("the payment service was allowed to mint a reset token")
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.PERMISSION_DENIED:
                    fail(f"payment service minting a reset token: {error.code()} {error.details()}")
        with mtls_channel(internal_address, pki_dir, "website-mailer") as channel:
            accounts = Service(channel, "licensing.v1.AccountService")
            minted = accounts.call("CreatePasswordResetToken", email=email)
            if minted.user_id != signed_up.user_id or not minted.token:
                fail(f"CreatePasswordResetToken: user {minted.user_id}")
        users.refused(
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESET_TOKEN_INVALID",
            "ResetPassword",
            user_id=minted.user_id,
            token="not-" + minted.token,
            new_password="third-password-3",
        )
        users.call("ResetPassword", user_id=minted.user_id, token=minted.token, new_password="third-password-3")
        users.call("Login", email=email, password="third-password-3")
        users.refused(
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESET_TOKEN_INVALID",
            "ResetPassword",
            user_id=minted.user_id,
            token=minted.token,
            new_password="fourth-password-4",
        )
        print("ok reset-password with a minted token, once", flush=True)


def license_flows(users, args):
    session = users.call("Login", email=DEMO_EMAIL, password=DEMO_PASSWORD).session
    me = users.with_token(session.access_token)

    detail = me.call("GetLicense", license_id=args.license)
    if detail.license.id != args.license or not detail.license.key:
        fail(f"GetLicense: {detail.license}")
    status = detail.license.DESCRIPTOR.fields_by_name["status"].enum_type.values_by_number[detail.license.status].name
    print(f"ok get-license {status} entitlements={len(detail.feature_entitlements)}", flush=True)
    me.refused(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "GetLicense", license_id=args.other_license)
    me.refused(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "ListActivations", license_id=args.other_license)
    print("ok another user's license is NOT_FOUND", flush=True)

    activations = me.call("ListActivations", license_id=args.license).activations
    ids = [activation.id for activation in activations]
    if args.activation not in ids or any(not activation.hostname for activation in activations):
        fail(f"ListActivations: {ids}")
    print(f"ok list-activations {len(ids)}", flush=True)

    me.refused(grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "DeactivateMachine", activation_id=args.other_activation)
    me.refused(
        grpc.StatusCode.FAILED_PRECONDITION,
        "DEACTIVATION_LIMIT_REACHED",
        "DeactivateMachine",
        activation_id=args.limited_activation,
    )
    freed = me.call("DeactivateMachine", activation_id=args.activation)
    if freed.license_id != args.license:
        fail(f"DeactivateMachine: {freed}")
    after = [activation.id for activation in me.call("ListActivations", license_id=args.license).activations]
    if args.activation in after:
        fail("the deactivated machine is still listed")
    print("ok deactivate-machine (foreign NOT_FOUND, limit FAILED_PRECONDITION)", flush=True)

    releases = me.call("ListReleases").releases
    if not releases or not all(file.url for release in releases for file in release.files):
        fail(f"ListReleases: {releases}")
    print(f"ok list-releases {len(releases)}", flush=True)


def mtls_channel(address, pki_dir, client):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki_dir / "ca.pem").read_bytes(),
        private_key=(pki_dir / f"{client}.key").read_bytes(),
        certificate_chain=(pki_dir / f"{client}.pem").read_bytes(),
    )
    return grpc.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--public", required=True, help="host:port of the public listener")
    parser.add_argument("--internal", help="host:port of the mutual-TLS listener")
    parser.add_argument("--pki-dir", type=pathlib.Path, help="the sandbox directory")
    parser.add_argument("--license", required=True)
    parser.add_argument("--other-license", required=True)
    parser.add_argument("--activation", required=True)
    parser.add_argument("--limited-activation", required=True)
    parser.add_argument("--other-activation", required=True)
    args = parser.parse_args()

    with grpc.insecure_channel(args.public) as channel:
        users = Service(channel, "licensing.v1.UserService")
        account_flows(users, args.internal, args.pki_dir)
        license_flows(users, args)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()

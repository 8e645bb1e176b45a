"""An outside client for licensing-gateway written against the stock Python grpcio packages.

Checks, printing one `ok ...` line per check and exiting non-zero on the first failure:
  * the standard `grpc.health.v1` Check on the public listener: overall ("") and
    `licensing.v1.UserService` SERVING, an unknown service NOT_FOUND;
  * server reflection (grpcio-reflection's client speaks v1alpha) lists the services;
  * with --internal: IssueLicense over mutual TLS as the payment service (a dynamic call
    built from reflection, no generated code) succeeds, and the intruder certificate gets
    PERMISSION_DENIED.

Usage: python health_and_reflection.py --public 127.0.0.1:50051
           [--internal 127.0.0.1:50052 --pki-dir sandbox-data --request-id ID]
"""

import argparse
import pathlib
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT = 10.0


def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def check_health(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service, expected in [
        ("", health_pb2.HealthCheckResponse.SERVING),
        ("licensing.v1.UserService", health_pb2.HealthCheckResponse.SERVING),
    ]:
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        if response.status != expected:
            fail(f"health {service!r}: {name}")
        print(f"ok health {service!r} {name}", flush=True)
    try:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
        fail("health of an unknown service answered")
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            fail(f"health of an unknown service: {error.code()}")
        print(f"ok health 'no.such.Service' {error.code().name}", flush=True)


def list_services(channel):
    services = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())
    print(f"ok services {' '.join(services)}", flush=True)
    return services


def issue_license(channel, request_id):
    """IssueLicense without generated code: the schema comes from reflection."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName("licensing.v1.IssuanceService").FindMethodByName("IssueLicense")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/licensing.v1.IssuanceService/IssueLicense",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return call(
        request_class(request_id=request_id, user_email="demo@example.com"), timeout=TIMEOUT
    )


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
    parser.add_argument("--request-id", default="python-payment-1")
    args = parser.parse_args()

    with grpc.insecure_channel(args.public) as channel:
        check_health(channel)
        services = list_services(channel)
        for wanted in ["grpc.health.v1.Health", "licensing.v1.UserService"]:
            if wanted not in services:
                fail(f"reflection does not list {wanted}")
        if "licensing.v1.IssuanceService" in services:
            fail("the public listener offers IssuanceService")

    if args.internal:
        with mtls_channel(args.internal, args.pki_dir, "payment-service") as channel:
            response = issue_license(channel, args.request_id)
            if not response.license.id or not response.license.key:
                fail(f"IssueLicense returned no license: {response}")
            print(f"ok issue-license {response.license.id} replayed={response.replayed}", flush=True)
        with mtls_channel(args.internal, args.pki_dir, "intruder") as channel:
            try:
                # The intruder may not even use reflection on the internal listener, so call
                # with raw bytes: the request is refused before it is decoded.
                channel.unary_unary("/licensing.v1.IssuanceService/IssueLicense")(
                    b"", timeout=TIMEOUT
                )
                fail("the intruder certificate was allowed to issue a license")
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.PERMISSION_DENIED:
                    fail(f"intruder: {error.code()} {error.details()}")
                print(f"ok intruder {error.code().name}", flush=True)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()

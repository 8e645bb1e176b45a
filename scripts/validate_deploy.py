"""Checks deploy/ without a cluster or a container engine.

Run by scripts/validate-deploy, which installs kubernetes-validate and PyYAML
into .tools/. It:
  1. validates every Kubernetes manifest listed in the kustomization against
     the bundled Kubernetes JSON schemas (strict: unknown fields fail), for
     each version given; cert-manager's Certificate is a CRD without a bundled
     schema and gets structural checks instead;
  2. checks the properties the deployment promises (replicas, gRPC probes,
     non-root, read-only root filesystem, secrets mounted as files, ...);
  3. parses the Envoy configuration and checks its structure;
  4. writes the gateway.toml from the ConfigMap to OUT_DIR, with the
     certificate and PAT paths moved under OUT_DIR, for check-config.
Prints one line per failure and exits 1 if there was any.
"""

import argparse
import pathlib
import sys
import tomllib

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"
MOUNT_ROOT = "/etc/licensing-gateway/"

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def check(condition, message):
    if not condition:
        fail(message)
    return condition


def load_manifests():
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        path = KUBE / name
        if not check(path.is_file(), f"kustomization lists {name}, which does not exist"):
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((name, document))
    listed = set(kustomization["resources"])
    for path in KUBE.glob("*.yaml"):
        if path.name != "kustomization.yaml":
            check(path.name in listed, f"{path.name} is not listed in kustomization.yaml")
    return documents


def validate_schemas(documents, versions):
    before = len(failures)
    for name, document in documents:
        kind = document.get("kind")
        if document.get("apiVersion", "").startswith("cert-manager.io/"):
            check_certificate(name, document)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                fail(f"{name}: {kind} {document['metadata'].get('name')} (k8s {version}): {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError as error:
                fail(f"{name}: no schema for {kind} in k8s {version}: {error}")
    if len(failures) == before:
        print(f"ok   {len(documents)} manifests against Kubernetes {', '.join(versions)}")


def check_certificate(name, document):
    spec = document.get("spec", {})
    check(document.get("apiVersion") == "cert-manager.io/v1", f"{name}: Certificate must be cert-manager.io/v1")
    check(document.get("kind") == "Certificate", f"{name}: only Certificate is expected from cert-manager")
    for key in ("secretName", "issuerRef", "dnsNames"):
        check(key in spec, f"{name}: Certificate spec.{key} is missing")
    check("name" in spec.get("issuerRef", {}), f"{name}: Certificate spec.issuerRef.name is missing")
    check("server auth" in spec.get("usages", []), f"{name}: the certificate must allow server auth")


def find(documents, kind):
    return [document for _, document in documents if document.get("kind") == kind]


def check_promises(documents):
    deployments = find(documents, "Deployment")
    if not check(len(deployments) == 1, "exactly one Deployment"):
        return None
    deployment = deployments[0]
    pod = deployment["spec"]["template"]["spec"]
    check(deployment["spec"].get("replicas", 1) >= 2, "the Deployment runs at least two replicas")
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True, "the pod runs as non-root")
    container = pod["containers"][0]
    security = container.get("securityContext", {})
    check(security.get("readOnlyRootFilesystem") is True, "the root filesystem is read-only")
    check(security.get("allowPrivilegeEscalation") is False, "privilege escalation is off")
    resources = container.get("resources", {})
    check("requests" in resources and "limits" in resources, "resource requests and limits are set")
    for probe in ("livenessProbe", "readinessProbe"):
        grpc = container.get(probe, {}).get("grpc")
        check(grpc is not None and "port" in grpc and "service" in grpc, f"{probe} is a native gRPC probe with a service")
    ports = {port["containerPort"] for port in container.get("ports", [])}
    check({50051, 50052, 9090} <= ports, "the container declares the public, internal and admin ports")
    for mount in container.get("volumeMounts", []):
        check("subPath" not in mount, f"volume {mount['name']} uses subPath, which never sees Secret updates")
    secrets = {volume["secret"]["secretName"] for volume in pod.get("volumes", []) if "secret" in volume}
    check("licensing-gateway-pat" in secrets, "the PAT Secret is mounted as a file")
    check(any(env.get("valueFrom", {}).get("secretKeyRef") for env in container.get("env", [])),
          "the database password comes from a Secret")
    check(all(not str(env.get("value", "")).startswith("postgres") for env in container.get("env", [])),
          "no database URL in plain environment values")

    services = find(documents, "Service")
    service_ports = {port["port"] for service in services for port in service["spec"]["ports"]}
    check({50051, 50052} <= service_ports, "Services expose the public and internal ports")
    check(len(find(documents, "PodDisruptionBudget")) == 1, "a PodDisruptionBudget exists")
    policies = find(documents, "NetworkPolicy")
    if check(len(policies) == 1, "one NetworkPolicy"):
        internal_rules = [rule for rule in policies[0]["spec"]["ingress"]
                          if any(port.get("port") == 50052 for port in rule.get("ports", []))]
        check(len(internal_rules) == 1 and all("podSelector" in peer for peer in internal_rules[0]["from"]),
              "only selected pods (the payment service) may reach port 50052")
    config_maps = find(documents, "ConfigMap")
    if check(len(config_maps) == 1 and "gateway.toml" in config_maps[0]["data"], "a ConfigMap holds gateway.toml"):
        gateway_toml = config_maps[0]["data"]["gateway.toml"]
        limits = tomllib.loads(gateway_toml).get("limits", {})
        # Behind the ingress every user shares one TCP peer.
        check(limits.get("client_address_header") == "x-forwarded-for" and limits.get("trusted_proxy_hops", 0) >= 1,
              "gateway.toml reads the client address from X-Forwarded-For, with the proxies it trusts")
        return gateway_toml
    return None


def check_envoy():
    before = len(failures)
    config = yaml.safe_load(ENVOY.read_text())
    resources = config.get("static_resources", {})
    clusters = {cluster["name"]: cluster for cluster in resources.get("clusters", [])}
    for listener in resources.get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                if network_filter["name"] != "envoy.filters.network.http_connection_manager":
                    continue
                manager = network_filter["typed_config"]
                names = [http_filter["name"] for http_filter in manager.get("http_filters", [])]
                check(names == ["envoy.filters.http.cors", "envoy.filters.http.grpc_web", "envoy.filters.http.router"],
                      f"envoy: http filters are cors, grpc_web, router in that order (got {names})")
                check(manager.get("use_remote_address") is True,
                      "envoy: use_remote_address appends the client's address to X-Forwarded-For")
                for http_filter in manager.get("http_filters", []):
                    check("@type" in http_filter.get("typed_config", {}), f"envoy: {http_filter['name']} has a typed_config")
                for host in manager["route_config"]["virtual_hosts"]:
                    check("envoy.filters.http.cors" in host.get("typed_per_filter_config", {}),
                          f"envoy: virtual host {host['name']} has a CORS policy")
                    for route in host["routes"]:
                        target = route.get("route", {}).get("cluster")
                        check(target in clusters, f"envoy: route to unknown cluster {target}")
    for name, cluster in clusters.items():
        options = cluster.get("typed_extension_protocol_options", {}).get(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
        check("http2_protocol_options" in options.get("explicit_http_config", {}),
              f"envoy: cluster {name} speaks HTTP/2 upstream (gRPC needs it)")
    check(bool(clusters), "envoy: at least one cluster")
    if len(failures) == before:
        print("ok   envoy configuration parses and is structured as expected")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--k8s-version", action="append", required=True)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args = parser.parse_args()

    documents = load_manifests()
    validate_schemas(documents, args.k8s_version)
    gateway_toml = check_promises(documents)
    check_envoy()
    if gateway_toml is not None:
        relocated = gateway_toml.replace(MOUNT_ROOT, str(args.out.resolve()) + "/")
        (args.out / "gateway.toml").write_text(relocated)
    if failures:
        print(f"{len(failures)} deployment problem(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()

// One place that knows where the gateway is. Everything goes through the
// generated client over gRPC-Web with plain `fetch`, so it runs on the edge
// runtime as well as on Node.
import { Gateway } from "@licensing-gateway/client";

export function gateway(): Gateway {
  return new Gateway({
    baseUrl: process.env.GATEWAY_URL ?? "http://127.0.0.1:50051",
    timeoutMs: 5_000,
  });
}

// Starts the receiver: `npm start` (configuration: README.md).

import { ConfigError, describeConfig, loadConfig } from "./config";
import { createIssuanceClient } from "./gateway";
import { createLogger } from "./log";
import { createReceiver } from "./receiver";

const log = createLogger();

let config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  log.error("configuration error", { problem: error.message });
  process.exit(2);
}

const client = createIssuanceClient(config);
const server = createReceiver({ config, client, log });

server.listen(config.port, config.host, () => {
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : config.port;
  // Scripts read the port from this line (PORT=0 picks a free one).
  log.info("listening", { ...describeConfig(config), url: `http://${config.host}:${port}${config.webhookPath}`, port });
});

// Finish the webhooks in progress, then exit: an event cut off here is not
// lost, Stripe redelivers what was not answered.
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    log.info("shutting down", { signal });
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 15_000).unref();
  });
}

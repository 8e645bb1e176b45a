// One JSON object per line on stdout, for any log collector.
//
// What is logged is chosen field by field at each call site: event ids and
// types, RPC names, gRPC codes and reasons, Cryptlex license ids and states.
// Never the webhook secret, the raw body or signature header, license keys,
// or the customer's email address (personal data the logs do not need; the
// event id finds it in Stripe's dashboard).

export type Level = "debug" | "info" | "warn" | "error";

export type LogSink = (line: string) => void;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function createLogger(
  sink: LogSink = (line) => process.stdout.write(line + "\n"),
  minLevel: Level = (process.env.LOG_LEVEL as Level | undefined) ?? "info",
): Logger {
  const threshold = ORDER[minLevel] ?? ORDER.info;
  const write = (level: Level, msg: string, fields: Record<string, unknown> = {}) => {
    if (ORDER[level] < threshold) return;
    sink(JSON.stringify({ at: new Date().toISOString(), level, msg, ...fields }, bigintSafe));
  };
  return {
    debug: (msg, fields) => write("debug", msg, fields),
    info: (msg, fields) => write("info", msg, fields),
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
  };
}

function bigintSafe(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

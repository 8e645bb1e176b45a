// How values read to a person: dates like "12 March 2027", sizes like
// "48.2 MB", limits like "2 of 3", statuses as words. Server-side only (the
// pages are server components), so every visitor sees the same time zone:
// PORTAL_TIME_ZONE, default UTC.
import "server-only";
import { LicenseStatus, licenseStatus, optionalDate, type License, type Timestamp } from "@licensing-gateway/client";

const timeZone = process.env.PORTAL_TIME_ZONE ?? "UTC";
const dateFormat = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "long", year: "numeric", timeZone });
const dateTimeFormat = new Intl.DateTimeFormat("en-GB", {
  day: "numeric",
  month: "long",
  year: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  timeZone,
  timeZoneName: "short",
});

/** "12 March 2027", or `none` when unset. */
export function formatDate(timestamp: Timestamp | undefined, none = "—"): string {
  const date = optionalDate(timestamp);
  return date === undefined ? none : dateFormat.format(date);
}

/** "12 March 2027 at 14:05 UTC", or `none` when unset. */
export function formatDateTime(timestamp: Timestamp | undefined, none = "—"): string {
  const date = optionalDate(timestamp);
  return date === undefined ? none : dateTimeFormat.format(date);
}

/** The ISO form for `<time dateTime>`. */
export function isoDate(timestamp: Timestamp | undefined): string | undefined {
  return optionalDate(timestamp)?.toISOString();
}

/** "in 3 days", "2 hours ago": for "last synced". */
export function relativeTime(timestamp: Timestamp | undefined, now = Date.now()): string {
  const date = optionalDate(timestamp);
  if (date === undefined) return "never";
  const seconds = Math.round((date.getTime() - now) / 1000);
  const units: [Intl.RelativeTimeFormatUnit, number][] = [
    ["year", 365 * 24 * 3600],
    ["month", 30 * 24 * 3600],
    ["day", 24 * 3600],
    ["hour", 3600],
    ["minute", 60],
  ];
  const format = new Intl.RelativeTimeFormat("en-GB", { numeric: "auto" });
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return format.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

/** "48.2 MB". */
export function formatBytes(bytes: bigint | number): string {
  let size = Number(bytes);
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) {
    size /= 1000;
    unit++;
  }
  return unit === 0 ? `${size} bytes` : `${size.toFixed(size < 10 ? 1 : 0)} ${units[unit]}`;
}

export interface StatusView {
  label: string;
  /** The CSS modifier: `active`, `expired`, `suspended` or `revoked`. */
  tone: "active" | "expired" | "suspended" | "revoked";
  /** One sentence for the license page. */
  explanation: string;
}

export function statusView(license: License): StatusView {
  switch (licenseStatus(license)) {
    case LicenseStatus.REVOKED:
      return { label: "Revoked", tone: "revoked", explanation: "This license has been revoked and can no longer be used." };
    case LicenseStatus.SUSPENDED:
      return {
        label: "Suspended",
        tone: "suspended",
        explanation: "This license is suspended, for example while a payment is overdue. Contact support to resume it.",
      };
    case LicenseStatus.EXPIRED:
      return {
        label: "Expired",
        tone: "expired",
        explanation: `This license expired on ${formatDate(license.expiresAt)}. Renew it to keep using the app.`,
      };
    default:
      return { label: "Active", tone: "active", explanation: "This license is active." };
  }
}

/** The expiry as a person reads it. */
export function expiry(license: License): string {
  if (license.perpetual) return "Never (perpetual)";
  return formatDate(license.expiresAt, "Not started yet");
}

/** "2 of 3", "2 of unlimited". 0 or -1 allowed activations mean unlimited. */
export function activationsUsed(license: License): string {
  const unlimited = license.allowedActivations <= 0;
  return `${license.totalActivations} of ${unlimited ? "unlimited" : license.allowedActivations}`;
}

/** Deactivations left, or undefined when unlimited (-1). */
export function deactivationsLeft(license: License): number | undefined {
  if (license.allowedDeactivations < 0) return undefined;
  return Math.max(0, license.allowedDeactivations - license.totalDeactivations);
}

/** "1 of 3 used, 2 left", "1 used (unlimited)". */
export function deactivationsUsed(license: License): string {
  const left = deactivationsLeft(license);
  if (left === undefined) return `${license.totalDeactivations} used (unlimited)`;
  return `${license.totalDeactivations} of ${license.allowedDeactivations} used, ${left} left`;
}

const LICENSE_TYPES: Record<string, string> = {
  "node-locked": "Node-locked",
  "hosted-floating": "Floating (hosted)",
  "on-premise-floating": "Floating (on-premise)",
};

export function licenseType(type: string): string {
  return LICENSE_TYPES[type] ?? type;
}

const OS_NAMES: Record<string, string> = {
  windows: "Windows",
  macos: "macOS",
  linux: "Linux",
  android: "Android",
  ios: "iOS",
};

/** "Windows 11", "macOS 14.4". */
export function operatingSystem(os: string, version: string): string {
  const name = OS_NAMES[os] ?? os;
  return version ? `${name} ${version}` : name || "—";
}

/** "P1Y" → "yearly"; anything else as given. */
export function subscription(interval: string): string {
  const known: Record<string, string> = { P1Y: "Yearly", P1M: "Monthly", P3M: "Quarterly", P6M: "Every 6 months" };
  return known[interval] ?? interval;
}

/** A download link only for http(s) URLs; anything else (say, `javascript:`) is not a link. */
export function safeDownloadUrl(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.toString() : undefined;
  } catch {
    return undefined;
  }
}

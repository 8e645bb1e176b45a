"use client";
// A license key: monospace, wrapping anywhere so it fits a phone, selectable
// with one tap, and a Copy button.
import { useState } from "react";

export function LicenseKey({ value }: { value: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <span className="key">
      <code data-testid="license-key">{value}</code>
      <button
        type="button"
        className="secondary small"
        onClick={async () => {
          try {
            await navigator.clipboard.writeText(value);
            setCopied(true);
            setTimeout(() => setCopied(false), 2000);
          } catch {
            // No clipboard (an insecure context): the key stays selectable.
          }
        }}
        aria-label="Copy the license key"
      >
        {copied ? "Copied" : "Copy"}
      </button>
    </span>
  );
}

import type { Metadata, Viewport } from "next";
import type { ReactNode } from "react";

import { portalName } from "@/lib/brand";
import "./globals.css";

export function generateMetadata(): Metadata {
  const name = portalName();
  return {
    title: { default: `${name} customer portal`, template: `%s · ${name}` },
    description: "Your licenses, machines, downloads and account",
    // Reset links carry a token: never send it to another site as a referrer.
    referrer: "no-referrer",
    robots: { index: false, follow: false },
  };
}

// Every page reads the session or settings at request time.
export const dynamic = "force-dynamic";

export const viewport: Viewport = { width: "device-width", initialScale: 1 };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        {children}
        <footer className="site-footer">
          {portalName()} · Licensing by Cryptlex through licensing-gateway
        </footer>
      </body>
    </html>
  );
}

// Pages for visitors without a session: sign-in, sign-up, password reset.
import Link from "next/link";
import type { ReactNode } from "react";

import { Brand } from "@/components/brand";

export default function PublicLayout({ children }: { children: ReactNode }) {
  return (
    <>
      <header className="site-header">
        <div className="inner">
          <Brand href="/sign-in" />
          <nav className="site-nav" aria-label="Account">
            <Link href="/sign-in">Sign in</Link>
            <Link href="/sign-up">Create account</Link>
          </nav>
        </div>
      </header>
      <main className="narrow">{children}</main>
    </>
  );
}

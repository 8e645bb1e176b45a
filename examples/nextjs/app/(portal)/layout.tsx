// The signed-in part of the portal: a header with the navigation and
// sign-out. Each page checks the session itself (a layout cannot redirect
// through /api/refresh back to the page it wraps).
import type { ReactNode } from "react";

import { signOut } from "@/app/actions/session";
import { Brand } from "@/components/brand";
import { NavLinks } from "@/components/nav-links";

export default function PortalLayout({ children }: { children: ReactNode }) {
  return (
    <>
      <header className="site-header">
        <div className="inner">
          <Brand href="/licenses" />
          <nav className="site-nav" aria-label="Portal">
            <NavLinks />
            <form action={signOut}>
              <button type="submit" className="link" data-testid="sign-out">
                Sign out
              </button>
            </form>
          </nav>
        </div>
      </header>
      <main>{children}</main>
    </>
  );
}

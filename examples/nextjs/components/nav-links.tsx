"use client";
// The portal's navigation, marking the current section.
import Link from "next/link";
import { usePathname } from "next/navigation";

const LINKS = [
  { href: "/licenses", label: "Licenses" },
  { href: "/releases", label: "Downloads" },
  { href: "/account", label: "Account" },
];

export function NavLinks() {
  const pathname = usePathname();
  return (
    <>
      {LINKS.map(({ href, label }) => (
        <Link key={href} href={href} aria-current={pathname === href || pathname.startsWith(`${href}/`) ? "page" : undefined}>
          {label}
        </Link>
      ))}
    </>
  );
}

import Link from "next/link";

import { portalName } from "@/lib/brand";

export function Brand({ href }: { href: string }) {
  const name = portalName();
  return (
    <Link className="brand" href={href}>
      <span className="brand-mark" aria-hidden="true">
        {name.slice(0, 1).toUpperCase()}
      </span>
      <span>{name}</span>
    </Link>
  );
}

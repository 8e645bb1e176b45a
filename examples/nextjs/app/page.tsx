// The portal's front door: the licenses when signed in, else sign-in.
import { cookies } from "next/headers";
import { redirect } from "next/navigation";

import { ACCESS_COOKIE } from "@/lib/session";

export const dynamic = "force-dynamic";

export default async function Home() {
  redirect((await cookies()).has(ACCESS_COOKIE) ? "/licenses" : "/sign-in");
}

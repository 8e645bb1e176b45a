// The signed-in user's licenses (ListMyLicenses, paged to the end), each
// linking to its own page.
import type { Metadata } from "next";
import Link from "next/link";
import type { License } from "@licensing-gateway/client";

import { Banners } from "@/components/banners";
import { LicenseKey } from "@/components/license-key";
import { StatusBadge } from "@/components/status-badge";
import { activationsUsed, expiry, licenseType, statusView } from "@/lib/format";
import { gateway, read } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { pageFailure, pageSession } from "@/lib/session";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "Licenses" };

const PATH = "/licenses";

export default async function LicensesPage({
  searchParams,
}: {
  searchParams: Promise<{ refreshed?: string; error?: string | string[]; notice?: string | string[] }>;
}) {
  const { refreshed, error, notice } = await searchParams;
  const accessToken = await pageSession(PATH, refreshed === "1");
  let licenses: License[] = [];
  let failure: ErrorCode | undefined;
  try {
    licenses = await read(() => gateway().listAllLicenses(accessToken, { pageSize: 50 }));
  } catch (caught) {
    failure = pageFailure(caught, PATH, refreshed === "1");
  }
  return (
    <>
      <div className="page-title">
        <h1>Your licenses</h1>
        <p>Open a license to see its machines, free an activation or check its features.</p>
      </div>
      <Banners error={failure ?? error} notice={notice} />
      {failure ? null : licenses.length === 0 ? (
        <div className="card empty" data-testid="no-licenses">
          <h2>No licenses yet</h2>
          <p>When you buy a license, it shows up here with its key.</p>
          <Link className="button secondary" href="/releases">
            Browse downloads
          </Link>
        </div>
      ) : (
        <ul className="license-list" data-testid="licenses">
          {licenses.map((license) => {
            const status = statusView(license);
            return (
              <li key={license.id} className={`card license-card ${status.tone === "active" ? "" : "inactive"}`} data-testid="license">
                <div className="card-header">
                  <h2 className="product">{license.productName}</h2>
                  <StatusBadge status={status} />
                </div>
                <LicenseKey value={license.key} />
                <div className="meta">
                  <span>
                    {status.tone === "expired" ? "Expired" : "Expires"} <strong>{expiry(license)}</strong>
                  </span>
                  <span>
                    Machines <strong>{activationsUsed(license)}</strong>
                  </span>
                  <span>{licenseType(license.type)}</span>
                </div>
                <div className="actions">
                  <Link className="button secondary small" href={`/licenses/${encodeURIComponent(license.id)}`} data-testid="license-link">
                    Details and machines →
                  </Link>
                </div>
              </li>
            );
          })}
        </ul>
      )}
    </>
  );
}

// One license: its details and features (GetLicense) and the machines
// activated with it (ListActivations, paged to the end), each with a
// "Deactivate" button (DeactivateMachine, after a confirmation).
import type { Metadata } from "next";
import Link from "next/link";
import type { Activation, FeatureEntitlement, License } from "@licensing-gateway/client";

import { Banners } from "@/components/banners";
import { DeactivateButton } from "@/components/deactivate-button";
import { LicenseKey } from "@/components/license-key";
import { StatusBadge } from "@/components/status-badge";
import {
  activationsUsed,
  deactivationsLeft,
  deactivationsUsed,
  expiry,
  formatDate,
  formatDateTime,
  isoDate,
  licenseType,
  operatingSystem,
  relativeTime,
  statusView,
  subscription,
} from "@/lib/format";
import { isId } from "@/lib/forms";
import { gateway, read } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { pageFailure, pageSession } from "@/lib/session";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "License" };

export default async function LicensePage({
  params,
  searchParams,
}: {
  params: Promise<{ id: string }>;
  searchParams: Promise<{ refreshed?: string; error?: string | string[]; notice?: string | string[] }>;
}) {
  const { id } = await params;
  const { refreshed, error, notice } = await searchParams;
  const path = `/licenses/${encodeURIComponent(id)}`;
  const accessToken = await pageSession(path, refreshed === "1");

  let license: License | undefined;
  let features: FeatureEntitlement[] = [];
  let activations: Activation[] = [];
  let failure: ErrorCode | undefined;
  if (!isId(id)) {
    failure = "not-found";
  } else {
    try {
      const client = gateway();
      const [detail, machines] = await Promise.all([
        read(() => client.getLicense(accessToken, id)),
        read(() => client.listAllActivations(accessToken, id, { pageSize: 50 })),
      ]);
      license = detail.license;
      features = detail.featureEntitlements;
      activations = machines;
    } catch (caught) {
      failure = pageFailure(caught, path, refreshed === "1");
    }
  }

  if (license === undefined) {
    return (
      <>
        <Link className="back" href="/licenses">
          ← All licenses
        </Link>
        <Banners error={failure ?? "generic"} />
      </>
    );
  }

  const status = statusView(license);
  const left = deactivationsLeft(license);
  return (
    <>
      <Link className="back" href="/licenses">
        ← All licenses
      </Link>
      <div className="page-title card-header">
        <h1>{license.productName}</h1>
        <StatusBadge status={status} />
      </div>
      <Banners error={error} notice={notice} />
      {status.tone === "active" ? null : (
        <div className={`banner ${status.tone === "revoked" ? "error" : "warning"}`} data-testid="status-explanation">
          {status.explanation}
        </div>
      )}

      <div className="grid two">
        <section className="card" aria-labelledby="details">
          <h2 id="details">Details</h2>
          <dl className="facts" data-testid="license-details">
            <dt>License key</dt>
            <dd>
              <LicenseKey value={license.key} />
            </dd>
            <dt>Status</dt>
            <dd>{status.label}</dd>
            <dt>Expires</dt>
            <dd>
              <time dateTime={isoDate(license.expiresAt)}>{expiry(license)}</time>
            </dd>
            {license.subscriptionInterval ? (
              <>
                <dt>Renews</dt>
                <dd>{subscription(license.subscriptionInterval)}</dd>
              </>
            ) : null}
            <dt>Type</dt>
            <dd>{licenseType(license.type)}</dd>
            <dt>Machines</dt>
            <dd data-testid="activations-used">{activationsUsed(license)}</dd>
            <dt>Deactivations</dt>
            <dd data-testid="deactivations-used">{deactivationsUsed(license)}</dd>
            <dt>Purchased</dt>
            <dd>{formatDate(license.createdAt)}</dd>
            {Object.entries(license.metadata).map(([key, value]) => (
              <FactRow key={key} label={key} value={value} />
            ))}
          </dl>
        </section>

        <section className="card" aria-labelledby="features">
          <h2 id="features">Features</h2>
          {features.length === 0 ? (
            <p className="muted">This license has no extra features.</p>
          ) : (
            <table className="data" data-testid="features">
              <thead>
                <tr>
                  <th>Feature</th>
                  <th>Value</th>
                  <th>Until</th>
                </tr>
              </thead>
              <tbody>
                {features.map((feature) => (
                  <tr key={feature.featureId} data-testid="feature">
                    <td data-label="Feature">{feature.featureName}</td>
                    <td data-label="Value">{feature.value || "Included"}</td>
                    <td data-label="Until">{formatDate(feature.expiresAt, "No end date")}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
      </div>

      <section className="card" aria-labelledby="machines">
        <div className="card-header">
          <h2 id="machines">Machines</h2>
          <span className="muted small">
            {activationsUsed(license)} in use ·{" "}
            {left === undefined ? "unlimited deactivations" : `${left} deactivation${left === 1 ? "" : "s"} left`}
          </span>
        </div>
        {activations.length === 0 ? (
          <p className="muted" data-testid="no-activations">
            No machine is activated with this license. Enter the key in the app to activate one.
          </p>
        ) : (
          <table className="data" data-testid="activations">
            <thead>
              <tr>
                <th>Machine</th>
                <th>System</th>
                <th>App version</th>
                <th>Location</th>
                <th>Last synced</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {activations.map((activation) => (
                <tr key={activation.id} data-testid="activation" data-hostname={activation.hostname}>
                  <td data-label="Machine" className="primary">
                    <strong>{activation.hostname || "Unnamed machine"}</strong>
                    {activation.vmName ? <div className="muted small">VM {activation.vmName}</div> : null}
                    <div className="muted small">Activated {formatDate(activation.createdAt)}</div>
                  </td>
                  <td data-label="System">{operatingSystem(activation.os, activation.osVersion)}</td>
                  <td data-label="App version">{activation.appVersion || activation.releaseVersion || "—"}</td>
                  <td data-label="Location">{activation.location || "Unknown"}</td>
                  <td data-label="Last synced">
                    <time dateTime={isoDate(activation.lastSyncedAt)} title={formatDateTime(activation.lastSyncedAt)}>
                      {relativeTime(activation.lastSyncedAt)}
                    </time>
                  </td>
                  <td className="actions">
                    <DeactivateButton
                      licenseId={license.id}
                      activationId={activation.id}
                      hostname={activation.hostname}
                      deactivationsLeft={left}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}

function FactRow({ label, value }: { label: string; value: string }) {
  return (
    <>
      <dt className="metadata">{label}</dt>
      <dd>{value}</dd>
    </>
  );
}

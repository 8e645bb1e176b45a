// The releases the user may download (ListReleases, newest first), with
// their files; `?channel=` shows one channel only.
import type { Metadata } from "next";
import Link from "next/link";
import type { Release } from "@licensing-gateway/client";

import { Banners } from "@/components/banners";
import { formatBytes, formatDate, isoDate, operatingSystem, safeDownloadUrl } from "@/lib/format";
import { gateway, read } from "@/lib/gateway";
import type { ErrorCode } from "@/lib/messages";
import { pageFailure, pageSession } from "@/lib/session";

export const dynamic = "force-dynamic";
export const metadata: Metadata = { title: "Downloads" };

export default async function ReleasesPage({
  searchParams,
}: {
  searchParams: Promise<{ refreshed?: string; channel?: string | string[] }>;
}) {
  const { refreshed, channel: channelParam } = await searchParams;
  const channel = typeof channelParam === "string" && /^[\w.-]{1,64}$/.test(channelParam) ? channelParam : undefined;
  const path = channel ? `/releases?channel=${encodeURIComponent(channel)}` : "/releases";
  const accessToken = await pageSession(path, refreshed === "1");

  let releases: Release[] = [];
  let channels: string[] = [];
  let failure: ErrorCode | undefined;
  try {
    // Every release once: the channel list needs them all, and one channel is
    // a filter of those (ListReleases' `channel` would cost a second call).
    const all = await read(() => gateway().listAllReleases(accessToken, { pageSize: 50 }));
    releases = channel ? all.filter((release) => release.channel === channel) : all;
    channels = [...new Set(all.map((release) => release.channel).filter((name) => name !== ""))].sort();
  } catch (caught) {
    failure = pageFailure(caught, path, refreshed === "1");
  }

  return (
    <>
      <div className="page-title">
        <h1>Downloads</h1>
        <p>Releases of the products you have a license for, newest first.</p>
      </div>
      <Banners error={failure} />
      {channels.length > 1 ? (
        <nav className="filters" aria-label="Release channel">
          <Link href="/releases" aria-current={channel === undefined ? "true" : undefined}>
            All
          </Link>
          {channels.map((name) => (
            <Link key={name} href={`/releases?channel=${encodeURIComponent(name)}`} aria-current={channel === name ? "true" : undefined}>
              {name}
            </Link>
          ))}
        </nav>
      ) : null}
      {failure ? null : releases.length === 0 ? (
        <div className="card empty" data-testid="no-releases">
          <h2>No downloads yet</h2>
          <p>Releases appear here for the products you have a license for.</p>
        </div>
      ) : (
        releases.map((release) => (
          <article key={release.id} className="card" data-testid="release">
            <div className="card-header">
              <h2>
                {release.productName} {release.version}
              </h2>
              <span className="badge channel">{release.channel}</span>
            </div>
            <p className="muted small">
              {release.name && ![release.version, `${release.productName} ${release.version}`].includes(release.name)
                ? `${release.name} · `
                : ""}
              Published <time dateTime={isoDate(release.publishedAt)}>{formatDate(release.publishedAt, "—")}</time>
              {release.platforms.length > 0
                ? ` · ${release.platforms.map((platform) => operatingSystem(platform, "")).join(", ")}`
                : ""}
            </p>
            {release.notes ? <p className="notes">{release.notes}</p> : null}
            <ul className="files">
              {release.files.map((file) => {
                const url = safeDownloadUrl(file.url);
                return (
                  <li key={file.id} data-testid="release-file">
                    <span className="file-name">{file.name}</span>
                    <span className="row">
                      <span className="muted small">{formatBytes(file.size)}</span>
                      {file.secured ? <span className="secured">needs your license key</span> : null}
                      {url ? (
                        <a className="button small" href={url} rel="noopener noreferrer" download data-testid="download">
                          Download
                        </a>
                      ) : (
                        <span className="muted small">No download link</span>
                      )}
                    </span>
                    {file.checksum ? <span className="checksum">Checksum {file.checksum}</span> : null}
                  </li>
                );
              })}
            </ul>
          </article>
        ))
      )}
    </>
  );
}

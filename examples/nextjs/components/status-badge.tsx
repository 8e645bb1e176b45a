import type { StatusView } from "@/lib/format";

export function StatusBadge({ status }: { status: StatusView }) {
  return (
    <span className={`badge ${status.tone}`} data-testid="license-status">
      {status.label}
    </span>
  );
}

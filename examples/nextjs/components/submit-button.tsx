"use client";
// A submit button that says it is working while its form's action runs.
import { useFormStatus } from "react-dom";
import type { ReactNode } from "react";

export function SubmitButton({
  children,
  pendingText,
  className,
  testId,
}: {
  children: ReactNode;
  pendingText?: string;
  className?: string;
  testId?: string;
}) {
  const { pending } = useFormStatus();
  return (
    <button type="submit" className={className} disabled={pending} aria-busy={pending} data-testid={testId}>
      {pending ? (pendingText ?? "Working…") : children}
    </button>
  );
}

"use client";
// "Deactivate" opens a confirmation dialog saying what it costs (one of the
// license's deactivations, and how many are left); only "Yes, deactivate"
// submits the server action.
import { useRef } from "react";

import { deactivateMachine } from "@/app/actions/licenses";
import { SubmitButton } from "@/components/submit-button";

export function DeactivateButton({
  licenseId,
  activationId,
  hostname,
  deactivationsLeft,
}: {
  licenseId: string;
  activationId: string;
  hostname: string;
  /** undefined: unlimited. */
  deactivationsLeft: number | undefined;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  return (
    <>
      <button type="button" className="secondary small" onClick={() => dialog.current?.showModal()} data-testid="deactivate">
        Deactivate
      </button>
      <dialog ref={dialog} aria-labelledby={`deactivate-${activationId}`} data-testid="deactivate-dialog">
        <h3 id={`deactivate-${activationId}`}>Deactivate {hostname || "this machine"}?</h3>
        <p>
          The app on this machine stops working with this license, and its activation becomes free for another machine.
        </p>
        <p data-testid="deactivations-left">
          {deactivationsLeft === undefined ? (
            "This license can be deactivated any number of times."
          ) : deactivationsLeft === 0 ? (
            <strong>This license has no deactivations left.</strong>
          ) : (
            <>
              This uses one of the license&apos;s deactivations: <strong>{deactivationsLeft} left</strong>.
            </>
          )}
        </p>
        <form action={deactivateMachine}>
          <input type="hidden" name="licenseId" value={licenseId} />
          <input type="hidden" name="activationId" value={activationId} />
          <div className="row">
            <button type="button" className="secondary" onClick={() => dialog.current?.close()}>
              Cancel
            </button>
            <SubmitButton className="danger" pendingText="Deactivating…" testId="confirm-deactivate">
              Yes, deactivate
            </SubmitButton>
          </div>
        </form>
      </dialog>
    </>
  );
}

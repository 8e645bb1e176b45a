// The error and notice banners. They take CODES and look the text up in the
// site's own tables, so a link can never put its own words on the page.
import { errorMessage, noticeMessage } from "@/lib/messages";

type Code = string | string[] | undefined | null;

export function Banners({ error, notice }: { error?: Code; notice?: Code }) {
  const errorText = errorMessage(error);
  const noticeText = noticeMessage(notice);
  return (
    <>
      {errorText ? (
        <div className="banner error" role="alert" data-testid="error">
          {errorText}
        </div>
      ) : null}
      {noticeText ? (
        <div className="banner notice" role="status" data-testid="notice">
          {noticeText}
        </div>
      ) : null}
    </>
  );
}

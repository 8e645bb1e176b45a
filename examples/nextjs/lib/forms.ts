// Reading submitted forms.

/** A text field of a submitted form; "" when absent (or a file). */
export function field(form: FormData, name: string): string {
  const value = form.get(name);
  return typeof value === "string" ? value : "";
}

/** A code as typed: "123 456" and "123-456" are "123456". */
export function normalizeCode(code: string): string {
  return code.replace(/[\s-]/g, "");
}

/** Six digits, as an authenticator app shows them. */
export function isTwoFactorCode(code: string): boolean {
  return /^\d{6}$/.test(code);
}

/** A Cryptlex id as the portal passes it around (a UUID or similar): safe in a path. */
export function isId(id: string): boolean {
  return /^[A-Za-z0-9_-]{1,64}$/.test(id);
}

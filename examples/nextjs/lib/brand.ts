// The company's name as the portal shows it (PORTAL_NAME; read on the server).
export function portalName(): string {
  return process.env.PORTAL_NAME ?? "Demo Software";
}

import type { ReactNode } from "react";

export const metadata = {
  title: "Licensing gateway example",
  description: "Sign in, see your profile and licenses: Next.js over gRPC-Web",
};

const styles = `
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #1f2328; }
  form.stack { display: grid; gap: .75rem; max-width: 22rem; }
  label { display: grid; gap: .25rem; font-weight: 600; }
  input { font: inherit; padding: .45rem .6rem; border: 1px solid #8c959f; border-radius: 6px; }
  button { font: inherit; padding: .5rem .9rem; border: 0; border-radius: 6px; background: #1f6feb; color: white; cursor: pointer; }
  .error { background: #ffebe9; border: 1px solid #ff8182; padding: .6rem .8rem; border-radius: 6px; }
  .notice { background: #dafbe1; border: 1px solid #4ac26b; padding: .6rem .8rem; border-radius: 6px; }
  table { border-collapse: collapse; width: 100%; margin-top: .5rem; }
  th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #d0d7de; }
  code { font-size: .9em; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
  dt { font-weight: 600; }
`;

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <head>
        <style>{styles}</style>
      </head>
      <body>{children}</body>
    </html>
  );
}
